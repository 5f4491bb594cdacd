"""Helpers shared by the bench scripts (pgbench.py, sysbench.py, callgrind.py): ports, the
proxy's CPU time and RSS from /proc, the idle-client footprint, what else the machine did during
a run (`MachineMeter`), and the servers and proxies under test (sandbox PostgreSQL and MariaDB,
PgBouncer, poolguard), each startable under a wrapper such as valgrind."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# POOLGUARD_BIN: another build to measure (e.g. the one before a change); otherwise the release
# build where cargo puts it (pgbench.sh and sysbench.sh build it there).
POOLGUARD = os.environ.get("POOLGUARD_BIN") or os.path.join(
    ROOT, os.environ.get("CARGO_TARGET_DIR") or "target", "release", "poolguard")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


CLK_TCK = os.sysconf("SC_CLK_TCK")
# The benchmarks' database and user (both doors, all servers), and the PostgreSQL benchmarks'
# pool size (both proxies alike).
USER, PASSWORD, DB = "app", "app-secret", "bank"
PG_POOL = 20


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return tuple(float(x) for x in f.read().split()[:3])


def _proc_stat(pid):
    """The fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_split(pid):
    """(user, system) CPU seconds of a process so far, all its threads."""
    fields = _proc_stat(pid)
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    return sum(cpu_split(pid))


def _machine_idle():
    """(idle + iowait clock ticks of all CPUs so far, online CPUs, monotonic seconds): the
    machine's busy time over a run is the CPUs' time minus this. Busy therefore includes
    interrupts and softirq, which must be so: a process's own times include the softirq work
    done in its context (loopback TCP: 40-50% of a core under sysbench's point selects), which
    /proc/stat reports in its softirq column; summing only its user and system columns made
    "other CPU" negative. Time stolen by the hypervisor counts as other work too."""
    with open("/proc/stat") as f:
        cols = f.readline().split()
        cpus = sum(1 for line in f if line.startswith("cpu"))
    return int(cols[4]) + int(cols[5]), cpus, time.monotonic()


def _tree_ticks(roots):
    """CPU time of the processes below `roots` (roots included) in clock ticks, with the
    children they already reaped (cutime + cstime): a process that ends between two readings
    moves into its parent's count, so differences stay whole."""
    stats = {}  # pid -> (parent, ticks)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = _proc_stat(name)
            except OSError:  # ended while listed
                continue
            stats[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    children = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, seen, todo = 0, set(), [p for p in roots if p in stats]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            total += stats[pid][1]
            todo += children.get(pid, [])
    return total


class MachineMeter:
    """What else the machine did during one measured run (a `with` block): the 1-minute load
    average at its end, and the CPU used by processes other than the benchmark's own, as a
    percentage of one core over the run's wall clock.

    The benchmark's own are the processes below `roots`: this script (its reaped children, the
    client programs, included), and servers that detached from it (a PostgreSQL started by
    pg_ctl). "Other" is the machine's busy time (all CPUs' time not idle, from /proc/stat) minus
    theirs (/proc/<pid>/stat, which includes softirq work done on their behalf); both are read
    to a clock tick, so a few percent either way is noise."""

    def __init__(self, roots=()):
        self.roots = [os.getpid(), *roots]

    def __enter__(self):
        self.idle = _machine_idle()
        self.own = _tree_ticks(self.roots)
        return self

    def __exit__(self, *exc):
        own = _tree_ticks(self.roots) - self.own
        (idle0, cpus, t0), (idle1, _, t1) = self.idle, _machine_idle()
        seconds = t1 - t0
        busy = cpus * seconds * CLK_TCK - (idle1 - idle0)
        self.fields = {"load1": loadavg()[0],
                       "other_cpu_pct": (busy - own) * 100 / CLK_TCK / seconds if seconds else 0.0}
        return False


def machine_note(own, load_counts):
    """How RESULTS.md explains the two MachineMeter columns; `own`: the benchmark's processes,
    `load_counts`: what of its own the load average counts."""
    return ("**load** is the machine's 1-minute load average at the end of each run; it counts "
            f"{load_counts}, so on its own it says little about other work. **other CPU** is the "
            "CPU time used during the run by every process that is not the benchmark's own "
            f"({own}), as a percentage of one core: the time the machine's CPUs were not idle "
            "(/proc/stat) minus that of the benchmark's processes (/proc/<pid>/stat); a few "
            "percent either way is accounting noise. Medians over the repetitions, with the range "
            "in brackets.")


def spread(values, fmt):
    """A median over repetitions with its range, e.g. "3.1 (2.8-3.6)"; one value alone."""
    values = sorted(values)
    if not values:
        return "n/a"
    mid = fmt.format(values[len(values) // 2] if len(values) % 2 else
                     (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2)
    if len(values) == 1 or fmt.format(values[0]) == fmt.format(values[-1]):
        return mid
    return f"{mid} ({fmt.format(values[0])} to {fmt.format(values[-1])})"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_footprint(pid, script, argv, n):
    """RSS and descriptor growth of process `pid` per idle client: runs bench/`script` `argv`
    (which opens n logged-in clients, prints "READY <ok> <failed>" and holds them until stdin
    closes)."""
    before = rss_kib(pid)
    fds_before = open_fds(pid)
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", script)] + argv,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    # Let the last logins finish their bookkeeping; RSS is read once, not polled for a value.
    time.sleep(2)
    after = rss_kib(pid)
    fds_after = open_fds(pid)
    p.stdin.close()
    p.wait(120)
    ok = int(line[1]) if len(line) > 1 else 0
    failed = int(line[2]) if len(line) > 2 else n
    return {"clients": ok, "failed": failed, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_client": (after - before) * 1024 / ok if ok else 0,
            "fds_before": fds_before, "fds_after": fds_after,
            "fds_per_client": (fds_after - fds_before) / ok if ok else 0}


# sysbench's tables in the MySQL benchmarks (prepared by each script against its sandbox).
SYSBENCH_TABLES, SYSBENCH_TABLE_SIZE = 4, 10000


def sysbench(workload, port, extra, timeout=1800):
    """One sysbench command (`extra` ends with prepare or run) as user app on database bank."""
    cmd = ["sysbench", workload, "--db-driver=mysql", "--mysql-host=127.0.0.1",
           f"--mysql-port={port}", "--mysql-user=app", "--mysql-password=app-secret",
           "--mysql-db=bank", f"--tables={SYSBENCH_TABLES}",
           f"--table-size={SYSBENCH_TABLE_SIZE}"] + extra
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def parse_sysbench(report):
    """(TPS, p95 ms, ignored errors, statements) from a sysbench run's report (None if absent)."""
    tps = re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", report)
    p95 = re.search(r"95th percentile:\s+([\d.]+)", report)
    errs = re.search(r"ignored errors:\s+(\d+)", report)
    queries = re.search(r"queries:\s+(\d+)", report)
    return (float(tps.group(1)) if tps else None, float(p95.group(1)) if p95 else None,
            int(errs.group(1)) if errs else None, int(queries.group(1)) if queries else 0)


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


def poolguard_config(path, door, port, db_port, pool_size, budget, pool_mode="transaction",
                     limits="", auth=None, socket=None):
    """Writes a poolguard config with one front door (`door`: "postgres" or "mysql") on `port`
    for database bank (user app) on the server at `db_port`, or at its Unix `socket`."""
    auth = f'auth_method = "{auth}"\n' if auth else ""
    host = socket or f"127.0.0.1:{db_port}"
    with open(path, "w") as f:
        f.write(f"""
[{door}]
listen = "127.0.0.1:{port}"
{auth}
[[backends]]
name = "db"
protocol = "{door}"
hosts = ["{host}"]
max_connections = {budget}

[[databases]]
name = "{DB}"
backend = "db"
pool_mode = "{pool_mode}"
pool_size = {pool_size}

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[limits]
{limits}
""")


def mysql_config(path, port, db_port, pool_size, budget, pool_mode="transaction", limits=""):
    poolguard_config(path, "mysql", port, db_port, pool_size, budget, pool_mode, limits)


class PgSandbox:
    """`poolguard sandbox`: a throwaway PostgreSQL with user app and database bank."""

    def __init__(self, max_connections):
        self.proc = subprocess.Popen(
            [POOLGUARD, "sandbox", "--max-connections", str(max_connections),
             "--user", f"{USER}:{PASSWORD}", "--database", f"{DB}:{USER}",
             "--setting", "shared_buffers=256MB"],
            stdout=subprocess.PIPE, text=True)
        self.info = {}
        for line in self.proc.stdout:
            k, _, v = line.strip().partition("=")
            self.info[k] = v
            if k == "READY":
                break
        try:
            self.port = int(self.info["PORT"])
            self.socket = self.info.get("SOCKET")
            self.su_password = self.info["SUPERUSER_PASSWORD"]
            # pg_ctl detached the postmaster from the sandbox process: its pid file names it.
            data = self.sql("SHOW data_directory")
            with open(os.path.join(data, "postmaster.pid")) as f:
                self.server_pid = int(f.readline())
        except BaseException:
            self.stop()
            raise

    def sql(self, sql):
        env = dict(os.environ, PGPASSWORD=self.su_password)
        return subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", "postgres", "-c", sql],
                              env=env, capture_output=True, text=True).stdout.strip()

    def app_connections(self):
        out = self.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
        return int(out) if out.isdigit() else 0

    def pgbench_init(self, scale):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p",
                        str(self.port), "-U", USER, DB], env=env, check=True,
                       capture_output=True)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


class Proxy:
    """A proxy process under test, started in its own temp dir; `wrap` is a command prefix
    (e.g. valgrind) and `ready_timeout` how long it may take to listen."""

    def _start(self, cmd, wrap, ready_timeout, **popen):
        self.proc = subprocess.Popen(list(wrap) + cmd, **popen)
        wait_listening(self.proc, self.port, ready_timeout, type(self).__name__)
        self.pid = self.proc.pid

    def stop(self, timeout=30):
        """SIGTERM and wait (PgBouncer: immediate shutdown; poolguard: graceful)."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer(Proxy):
    """Debian's PgBouncer in transaction mode with a pool of PG_POOL, for database bank."""

    def __init__(self, backend_port, auth="scram-sha-256", wrap=(), ready_timeout=30,
                 socket=None):
        self.dir = tempfile.mkdtemp(prefix="poolguard-bench-pgbouncer-")
        # Over the server's Unix socket: libpq's way, the directory and the port.
        server = (f"host={os.path.dirname(socket)} port={socket.rsplit('.', 1)[1]}" if socket
                  else f"host=127.0.0.1 port={backend_port}")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            f.write(f'"{USER}" "{PASSWORD}"\n')
        with open(os.path.join(self.dir, "pgbouncer.ini"), "w") as f:
            f.write(f"""[databases]
{DB} = {server} dbname={DB}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = {auth}
auth_file = {self.dir}/userlist.txt
pool_mode = transaction
default_pool_size = {PG_POOL}
max_client_conn = 20000
max_db_connections = {PG_POOL}
logfile = {self.dir}/pgbouncer.log
pidfile =
server_reset_query =
""")
        for name in os.listdir(self.dir):
            os.chmod(os.path.join(self.dir, name), 0o644)
        account = {}
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root. It is started as the postgres account rather
            # than switching with -u, so that a wrapper runs as that account from the start
            # (valgrind opens its output file and its control FIFOs before PgBouncer would
            # switch, and could use neither afterwards); its log must be writable by it.
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            account = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self._start(["pgbouncer", os.path.join(self.dir, "pgbouncer.ini")], wrap, ready_timeout,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **account)


class Poolguard(Proxy):
    """poolguard's PostgreSQL door in transaction mode with a pool of PG_POOL, for database
    bank; `threads`: its --threads (None: the default, one worker per two cores); `socket`:
    the server's Unix socket instead of TCP."""

    def __init__(self, backend_port, auth="scram-sha-256", wrap=(), ready_timeout=30,
                 threads=None, binary=None, socket=None):
        self.dir = tempfile.mkdtemp(prefix="poolguard-bench-")
        self.port = free_port()
        cfg = os.path.join(self.dir, "poolguard.toml")
        # The login guards are raised: every benchmark client comes from 127.0.0.1, where a
        # real storm comes from many application hosts (PgBouncer has no such guard).
        poolguard_config(cfg, "postgres", self.port, backend_port, PG_POOL, PG_POOL,
                         limits='max_client_connections = 20000\nacquire_timeout = "60s"\n'
                                'max_logins_in_progress = 20000\nmax_logins_per_address = 20000',
                         auth=auth, socket=socket)
        threads = ["--threads", str(threads)] if threads is not None else []
        self._start([binary or POOLGUARD, *threads, "run", "--config", cfg], wrap,
                    ready_timeout, stdout=subprocess.DEVNULL,
                    stderr=open(os.path.join(self.dir, "log"), "w"),
                    env=dict(os.environ, RUST_LOG="warn"))
