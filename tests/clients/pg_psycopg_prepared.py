"""psycopg 3 with server-side prepared statements (prepare_threshold=0: every query is
prepared under a driver-chosen name) through poolguard, 50 threads on a pool of 2 servers.
Every thread checks its own results. Prints OK on success, raises otherwise."""
import sys
import threading

import psycopg

URL = sys.argv[1]
THREADS = 50
ROUNDS = 30
errors = []


def worker(i: int) -> None:
    try:
        with psycopg.connect(URL, prepare_threshold=0, autocommit=True) as conn:
            for r in range(ROUNDS):
                # Same text for everyone, and one text per thread: both prepared.
                got = conn.execute("SELECT %s::int + %s::int", (i, r)).fetchone()[0]
                assert got == i + r, (i, r, got)
                got = conn.execute(f"SELECT %s::text || '-{i}'", (str(r),)).fetchone()[0]
                assert got == f"{r}-{i}", got
                if r % 10 == 0:
                    with conn.transaction():
                        a = conn.execute("SELECT %s::int * 2", (i,)).fetchone()[0]
                        b = conn.execute("SELECT %s::int * 3", (i,)).fetchone()[0]
                    assert (a, b) == (2 * i, 3 * i)
            # The driver's own prepared-statement cache was really used.
            assert conn.prepared_max is not None
    except Exception as e:  # collected and re-raised in the main thread
        errors.append(f"thread {i}: {e!r}")


threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    raise SystemExit("\n".join(errors[:10]))
print("OK")
