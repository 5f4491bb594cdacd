"""Bytes and descriptors per idle client on both front doors, and nothing else: one sandbox
PostgreSQL and one sandbox MariaDB, then for each poolguard binary given (interleaved, `--reps`
times) a fresh poolguard per door, N idle logged-in clients (bench/pgclients.py md5,
bench/myclients.py mysql_native_password) and the growth of poolguard's RSS and open
descriptors (benchlib.idle_footprint).

Usage: python3 bench/idlefoot.py [--clients 10000] [--reps 1] [BIN ...]
       (default BIN: $POOLGUARD_BIN or target/release/poolguard)
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from benchlib import (POOLGUARD, free_port, idle_footprint, mysql_config,
                      start_mariadb_sandbox, wait_listening)

USER, PASSWORD, DB = "app", "app-secret", "bank"


def start_pg_sandbox():
    p = subprocess.Popen([POOLGUARD, "sandbox", "--max-connections", "50",
                          "--user", f"{USER}:{PASSWORD}", "--database", f"{DB}:{USER}"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = {}
    for line in p.stdout:
        k, _, v = line.strip().partition("=")
        info[k] = v
        if k == "READY":
            return p, int(info["PORT"])
    raise SystemExit(f"PostgreSQL sandbox exited: {p.wait()}")


def pg_config(path, port, db_port, clients):
    with open(path, "w") as f:
        f.write(f"""[postgres]
listen = "127.0.0.1:{port}"
auth_method = "md5"
[[backends]]
name = "pg"
protocol = "postgres"
hosts = ["127.0.0.1:{db_port}"]
max_connections = 10
[[databases]]
name = "{DB}"
backend = "pg"
pool_mode = "transaction"
pool_size = 5
[[users]]
name = "{USER}"
password = "{PASSWORD}"
[limits]
max_client_connections = {clients + 1000}
max_logins_per_address = 1000
""")


def measure(binary, door, db_port, clients, work):
    port = free_port()
    cfg = os.path.join(work, f"{door}.toml")
    if door == "postgres":
        pg_config(cfg, port, db_port, clients)
        script = "pgclients.py"
    else:
        mysql_config(cfg, port, db_port, 5, 10,
                     limits=f"max_client_connections = {clients + 1000}\n"
                     "max_logins_per_address = 1000")
        script = "myclients.py"
    p = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, f"{door}.log"), "w"),
                         env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_listening(p, port, 120)
        return idle_footprint(p.pid, script,
                              ["idle", str(port), USER, PASSWORD, DB, str(clients)], clients)
    finally:
        with open(os.path.join(work, f"{door}.log")) as f:
            lines = f.read().splitlines()
        if lines:
            print(f"{door} log: {len(lines)} lines, last: {lines[-1][:300]}", file=sys.stderr)
        p.send_signal(signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--doors", default="postgres,mysql")
    ap.add_argument("bins", nargs="*")
    args = ap.parse_args()
    bins = args.bins or [POOLGUARD]
    doors = args.doors.split(",")
    work = tempfile.mkdtemp(prefix="poolguard-idlefoot-")
    sandboxes = {}
    try:
        if "postgres" in doors:
            sandboxes["postgres"] = start_pg_sandbox()
        if "mysql" in doors:
            sandboxes["mysql"] = start_mariadb_sandbox(50)
        for rep in range(args.reps):
            for door in doors:
                for b in bins:
                    r = measure(b, door, sandboxes[door][1], args.clients, work)
                    print(f"rep {rep} {door:8} {b}: {r['clients']} clients "
                          f"({r['failed']} failed), {r['rss_before_kib']} -> "
                          f"{r['rss_after_kib']} KiB, {r['bytes_per_client']:.0f} B/client, "
                          f"{r['fds_before']} -> {r['fds_after']} descriptors "
                          f"({r['fds_per_client']:.2f}/client)",
                          flush=True)
    finally:
        for p, _ in sandboxes.values():
            p.send_signal(signal.SIGTERM)
            p.wait(60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
