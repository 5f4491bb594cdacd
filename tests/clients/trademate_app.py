"""The TradeMate incident, replayed: a Flask API (SQLAlchemy over PyMySQL) scaled out to several
processes, each with its own engine (pool_size=10, max_overflow=5, pool_timeout=2), all pointing
at the same MySQL. One handler leaks: it opens a connection, runs a query (every third leak inside
BEGIN with an uncommitted INSERT) and never closes it, keeping it in a global list. The other
handler is healthy: `with engine.connect()`, one read, one committed write.

Usage: trademate_app.py URL [--engines 3] [--seconds 10] [--burst 7] [--leak-rate 1.0]
                            [--max-leaks 10] [--healthy-threads 2] [--settle 3]

URL is an SQLAlchemy URL (mysql+pymysql://...). The app is driven in-process with
`app.test_client()` from several threads:

1. burst: each engine ("process") leaks `--burst` connections, as the leaky endpoint was hit
   first thing in the morning;
2. for `--seconds`: `--healthy-threads` threads per engine call the healthy endpoint in a loop,
   while one thread keeps hitting the leaky endpoint at `--leak-rate` per second (round robin
   over the engines, at most `--max-leaks` leaks per engine so the client-side pool keeps room);
3. after `--settle` seconds, the leaked transactions try a late COMMIT, the idle leaked
   connections a `SELECT 1`.

Prints one JSON line: healthy_ok, healthy_500, leaky_ok, leaky_500, leaked_tx_ok,
leaked_idle_ok, late_commit_ok, late_commit_failed, idle_probe_ok, idle_probe_failed, errors
(MySQL code -> count, for the endpoints), leaked_kicked (code -> count, the late COMMITs and
probes), messages (code -> first message).
"""
import argparse
import json
import threading
import time

from flask import Flask, jsonify
from sqlalchemy import create_engine, exc, text

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("--engines", type=int, default=3)
p.add_argument("--seconds", type=float, default=10)
p.add_argument("--burst", type=int, default=7)
p.add_argument("--leak-rate", type=float, default=1.0)
p.add_argument("--max-leaks", type=int, default=10)
p.add_argument("--healthy-threads", type=int, default=2)
p.add_argument("--settle", type=float, default=3)
args = p.parse_args()

ENGINES = [
    create_engine(args.url, pool_size=10, max_overflow=5, pool_timeout=2)
    for _ in range(args.engines)
]
LEAKS = []  # (connection, in_transaction): never closed, never collected
LEAKS_LOCK = threading.Lock()

app = Flask("trademate")

lock = threading.Lock()
stats = {
    "healthy_ok": 0, "healthy_500": 0, "leaky_ok": 0, "leaky_500": 0,
    "leaked_tx_ok": 0, "leaked_idle_ok": 0,
    "late_commit_ok": 0, "late_commit_failed": 0, "idle_probe_ok": 0, "idle_probe_failed": 0,
}
errors = {}
kicked = {}
messages = {}


def code_of(e):
    """The MySQL error code of an exception (or a short name for client-side failures)."""
    if isinstance(e, exc.TimeoutError):
        return "pool_timeout"
    orig = getattr(e, "orig", e)
    a = getattr(orig, "args", ())
    if a and isinstance(a[0], int):
        return str(a[0])
    return type(orig).__name__


def count(key, n=1):
    with lock:
        stats[key] += n


def record(table, code, message):
    with lock:
        table[code] = table.get(code, 0) + 1
        messages.setdefault(code, message[:200])


def fail(e):
    return jsonify({"code": code_of(e), "message": str(getattr(e, "orig", e))}), 500


@app.get("/healthy/<int:n>")
def healthy(n):
    try:
        with ENGINES[n].connect() as c:
            total = c.execute(text("SELECT COUNT(*) FROM trademate_orders")).scalar()
            c.execute(text("INSERT INTO trademate_orders (kind) VALUES ('healthy')"))
            c.commit()
        return jsonify({"orders": total})
    except Exception as e:  # noqa: BLE001 - every failure is a 500, as in production
        return fail(e)


@app.get("/leaky/<int:n>/<int:tx>")
def leaky(n, tx):
    try:
        c = ENGINES[n].connect()
        with LEAKS_LOCK:
            LEAKS.append((c, bool(tx)))
        if tx:
            c.exec_driver_sql("BEGIN")
            c.execute(text("INSERT INTO trademate_orders (kind) VALUES ('leaked-tx')"))
        else:
            c.execute(text("SELECT 1")).scalar()
        return jsonify({"leaked": True})  # ... and the connection is never closed
    except Exception as e:  # noqa: BLE001
        return fail(e)


def call(client, path, kind):
    r = client.get(path)
    body = r.get_json(silent=True) or {}
    if r.status_code == 200:
        count(kind + "_ok")
        return True
    count(kind + "_500")
    record(errors, body.get("code", str(r.status_code)), body.get("message", ""))
    return False


leak_counter = [0]
leaks_per_engine = [0] * args.engines


def leak_once(client, n):
    tx = leak_counter[0] % 3 == 0
    leak_counter[0] += 1
    leaks_per_engine[n] += 1
    if call(client, f"/leaky/{n}/{int(tx)}", "leaky"):
        count("leaked_tx_ok" if tx else "leaked_idle_ok")


def main():
    with ENGINES[0].begin() as c:
        c.execute(text(
            "CREATE TABLE IF NOT EXISTS trademate_orders ("
            " id BIGINT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(20) NOT NULL,"
            " at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB"))
    ENGINES[0].dispose()

    client = app.test_client()
    # 1. The morning burst on the leaky endpoint.
    for _ in range(args.burst):
        for n in range(args.engines):
            leak_once(client, n)

    # 2. Healthy traffic, with leaks still trickling in.
    stop = time.monotonic() + args.seconds

    def healthy_loop(n):
        c = app.test_client()
        while time.monotonic() < stop:
            call(c, f"/healthy/{n}", "healthy")
            time.sleep(0.02)

    def leak_loop():
        c = app.test_client()
        n = 0
        interval = 1.0 / args.leak_rate if args.leak_rate > 0 else None
        while interval and time.monotonic() < stop:
            time.sleep(interval)
            for _ in range(args.engines):
                n = (n + 1) % args.engines
                if leaks_per_engine[n] < args.max_leaks:
                    leak_once(c, n)
                    break

    threads = [threading.Thread(target=healthy_loop, args=(n,))
               for n in range(args.engines) for _ in range(args.healthy_threads)]
    threads.append(threading.Thread(target=leak_loop))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # 3. Later, the leaked connections are used again.
    time.sleep(args.settle)
    with LEAKS_LOCK:
        leaks = list(LEAKS)
    for c, tx in leaks:
        try:
            if tx:
                c.commit()
                count("late_commit_ok")
            else:
                c.execute(text("SELECT 1")).scalar()
                count("idle_probe_ok")
        except Exception as e:  # noqa: BLE001
            count("late_commit_failed" if tx else "idle_probe_failed")
            record(kicked, code_of(e), str(getattr(e, "orig", e)))

    print(json.dumps({**stats, "errors": errors, "leaked_kicked": kicked,
                      "messages": messages}, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
