"""Helpers shared by the bench scripts (pgbench.py, sysbench.py, mycallgrind.py): ports, the
proxy's CPU time and RSS from /proc, the idle-client footprint, a sandbox MariaDB."""
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# POOLGUARD_BIN: another build to measure (e.g. the one before a change).
POOLGUARD = os.environ.get("POOLGUARD_BIN") or os.path.join(ROOT, "target", "release", "poolguard")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_footprint(pid, script, argv, n):
    """RSS growth of process `pid` per idle client: runs bench/`script` `argv` (which opens n
    logged-in clients, prints "READY <ok> <failed>" and holds them until stdin closes)."""
    before = rss_kib(pid)
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", script)] + argv,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    # Let the last logins finish their bookkeeping; RSS is read once, not polled for a value.
    time.sleep(2)
    after = rss_kib(pid)
    p.stdin.close()
    p.wait(120)
    ok = int(line[1]) if len(line) > 1 else 0
    failed = int(line[2]) if len(line) > 2 else n
    return {"clients": ok, "failed": failed, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_client": (after - before) * 1024 / ok if ok else 0}


def start_mariadb_sandbox(max_connections):
    """`poolguard sandbox` with MariaDB, user app:app-secret and database bank: (process, port)."""
    p = subprocess.Popen(
        [POOLGUARD, "sandbox", "--engine", "mariadb", "--max-connections", str(max_connections),
         "--user", "app:app-secret", "--database", "bank:app"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = {}
    deadline = time.time() + 120
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"sandbox exited: {p.wait()}")
        k, _, v = line.strip().partition("=")
        info[k] = v
        if k == "READY":
            return p, int(info["PORT"])
    raise SystemExit("sandbox not ready")


def wait_listening(proc, port, timeout, what="poolguard"):
    """Waits until something accepts on `port`, failing early if `proc` exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited early")
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen")


def mysql_config(path, port, db_port, pool_size, budget, pool_mode="transaction", limits=""):
    """Writes a poolguard config with the MySQL front door on `port` for database bank (user
    app) on the MariaDB at `db_port`."""
    with open(path, "w") as f:
        f.write(f"""
[mysql]
listen = "127.0.0.1:{port}"

[[backends]]
name = "maria"
protocol = "mysql"
hosts = ["127.0.0.1:{db_port}"]
max_connections = {budget}

[[databases]]
name = "bank"
backend = "maria"
pool_mode = "{pool_mode}"
pool_size = {pool_size}

[[users]]
name = "app"
password = "app-secret"

[limits]
{limits}
""")
