"""The floor under a proxy's CPU per transaction, and whether io_uring lowers it (issue 18).

Runs `pgbench -S -M simple` against a sandbox PostgreSQL directly, through PgBouncer and
poolguard (transaction mode, pool of 20, as in bench/pgbench.py), and through `bench/relay`, a
bare one-thread byte relay that gives every client its own server connection and does nothing
but copy bytes: once over level-triggered epoll (the system calls an event-loop proxy makes),
once over io_uring (one receive always posted per socket, completions reaped when the loop
submits), and once over io_uring beside epoll (the loop sleeps in epoll_wait on the ring, as a
ring would inside tokio). Interleaved repetitions; each proxy's user and system CPU per
transaction without the clients' logins (bench/pgbench.py's `measure`), and the machine's
load and other CPU.

With --strace, also counts each proxy's system calls per transaction (`strace -c -f` over
`pgbench -S -t 2000` with 10 clients; strace slows the proxy, so these are counts, not times).

--door mysql does the same for the MySQL door: sysbench oltp_point_select (server-side prepared
statements, as bench/sysbench.py) against a sandbox MariaDB directly, through poolguard's
`[mysql]` door (transaction mode, pool of 16) and through both relays; CPU per statement
(sysbench's threads log in once, a few against hundreds of thousands of statements).

Each door rewrites its own section of bench/RELAY.md.

Usage: bench/relay.sh [--door pg|mysql] [--duration 10] [--reps 2] [--clients N ...] [--strace]
                      [--out FILE]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from benchlib import (DB, PASSWORD, POOLGUARD, ROOT, USER, MachineMeter, PgBouncer, PgSandbox,
                      Poolguard, Proxy, cpu_split, free_port, log, machine_note, mysql_config,
                      parse_sysbench, start_mariadb_sandbox, sysbench)
from pgbench import MACHINE_NOTE, machine_cells, measure, pgbouncer_version

RELAY = os.path.join(ROOT, "bench", "relay", "target", "release", "relay")


class Relay(Proxy):
    """bench/relay in `mode` (epoll or uring), in front of a server's TCP port."""

    def __init__(self, backend_port, mode):
        self.dir = tempfile.mkdtemp(prefix="poolguard-bench-relay-")
        self.port = free_port()
        self._start([RELAY, mode, f"127.0.0.1:{self.port}", f"127.0.0.1:{backend_port}"], (),
                    30, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))


class MysqlPoolguard(Proxy):
    """poolguard's MySQL door in transaction mode with a pool of 16 (as bench/sysbench.py)."""

    def __init__(self, backend_port, clients):
        self.dir = tempfile.mkdtemp(prefix="poolguard-bench-relay-")
        self.port = free_port()
        cfg = os.path.join(self.dir, "poolguard.toml")
        mysql_config(cfg, self.port, backend_port, 16, 20,
                     limits=f'acquire_timeout = "30s"\nmax_client_connections = {clients + 100}')
        self._start([POOLGUARD, "run", "--config", cfg], (), 30, stdout=subprocess.DEVNULL,
                    stderr=open(os.path.join(self.dir, "log"), "w"),
                    env=dict(os.environ, RUST_LOG="warn"))


RELAYS = ("epoll", "uring", "uring-epoll")
PG_TARGETS = ("direct", "pgbouncer", "poolguard", *(f"relay-{m}" for m in RELAYS))
MYSQL_TARGETS = ("direct", "poolguard", *(f"relay-{m}" for m in RELAYS))


def syscalls(proc, workdir, clients=10, per_client=2000):
    """{system call: calls per transaction} of `proc` over a pgbench run of
    clients x per_client transactions (logins included: 10 logins against 20,000
    transactions)."""
    out = os.path.join(workdir, "strace.txt")
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(proc.pid), "-o", out],
                              stderr=subprocess.DEVNULL)
    time.sleep(1)  # strace attaches before the clients start (a wait, not a race: it only
    # widens what is counted to the whole run)
    subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(proc.port), "-U", USER, "-n", "-c",
                    str(clients), "-j", "2", "-t", str(per_client), "-S", "-M", "simple", DB],
                   env=dict(os.environ, PGPASSWORD=PASSWORD), capture_output=True, check=True)
    tracer.terminate()
    tracer.wait()
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3]) / (clients * per_client)
    return counts


def measure_mysql(port, proc, threads, duration):
    """One sysbench oltp_point_select run through `port`; with `proc`, its CPU per statement."""
    before = cpu_split(proc.pid) if proc else (0, 0)
    with MachineMeter() as machine:
        out = sysbench("oltp_point_select", port,
                       [f"--threads={threads}", f"--time={duration}", "run"], duration + 120)
    after = cpu_split(proc.pid) if proc else (0, 0)
    tps, _, errors, statements = parse_sysbench(out.stdout)
    r = {"tps": tps or 0.0, "failed": errors if errors is not None else -1,
         "error": "" if out.returncode == 0 else out.stderr.strip()[-200:], **machine.fields}
    if proc and statements:
        r["user_us_per_tx"] = (after[0] - before[0]) * 1e6 / statements
        r["sys_us_per_tx"] = (after[1] - before[1]) * 1e6 / statements
        r["cpu_us_per_tx_steady"] = r["user_us_per_tx"] + r["sys_us_per_tx"]
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--door", choices=("pg", "mysql"), default="pg")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--clients", type=int, action="append")
    ap.add_argument("--strace", action="store_true", help="pg only")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RELAY.md"))
    args = ap.parse_args()
    mysql = args.door == "mysql"
    clients = args.clients or ([16] if mysql else [10, 100])
    targets = MYSQL_TARGETS if mysql else PG_TARGETS

    workdir = tempfile.mkdtemp(prefix="poolguard-bench-relay-")
    procs = []
    if mysql:
        server, server_port = start_mariadb_sandbox(max(clients) + 64)
    else:
        pg = PgSandbox(max_connections=max(clients) + 60)
        server_port = pg.port
    try:
        if mysql:
            out = sysbench("oltp_read_write", server_port, ["--threads=4", "prepare"], 300)
            if out.returncode != 0:
                raise SystemExit(out.stdout + out.stderr)
            procs = [MysqlPoolguard(server_port, max(clients))]
        else:
            pg.pgbench_init(scale=10)
            procs = [PgBouncer(server_port), Poolguard(server_port)]
        procs += [Relay(server_port, mode) for mode in RELAYS]
        by_name = dict(zip(targets[1:], procs))
        results = {}
        for rep in range(args.reps):
            for c in clients:
                for target in targets:
                    proc = by_name.get(target)
                    port = proc.port if proc else server_port
                    if mysql:
                        r = measure_mysql(port, proc, c, args.duration)
                    else:
                        r = measure(pg, port, proc.pid if proc else None,
                                    ["-S", "-M", "simple"], c, args.duration, workdir)
                    log(f"rep {rep + 1} c{c:<4} {target:18} tps {r['tps']:8.0f}"
                        f"  user {r.get('user_us_per_tx', 0):5.2f}"
                        f"  sys {r.get('sys_us_per_tx', 0):5.2f} us/unit"
                        f"  failed {r['failed']}  load {r['load1']:.1f}"
                        f"  other {r['other_cpu_pct']:.0f}% {r['error']}")
                    results.setdefault((c, target), []).append(r)
        calls = ({t: syscalls(by_name[t], workdir) for t in targets[1:]}
                 if args.strace and not mysql else {})
        section = (mysql_section if mysql else pg_section)(args, clients, results, calls)
        write(args.out, section)
        log(f"wrote {args.out}")
    finally:
        for p in procs:
            p.stop()
        if mysql:
            server.terminate()
            server.wait(60)
        else:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def med(rs, key):
    return statistics.median(r.get(key, 0) for r in rs)


TITLE = "# A bare relay: the floor under a proxy's CPU, over epoll and io_uring"
PG_HEADING = "## PostgreSQL: pgbench -S"
MYSQL_HEADING = "## MySQL: sysbench oltp_point_select"


def table(clients, targets, results, base, unit):
    """Rows per client count and target: TPS against `base`'s, and CPU per `unit` (against
    `base`'s where it is a proxy)."""
    base_cpu = base != "direct"
    rows = [f"| clients | target | TPS | vs {base} | user µs/{unit} | system µs/{unit} "
            f"| CPU µs/{unit} |" + (f" CPU vs {base} |" if base_cpu else "")
            + " load | other CPU % |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if base_cpu else "")
            + " --- | --- |"]
    for c in clients:
        b = results[(c, base)]
        for target in targets:
            rs = results[(c, target)]
            tps = med(rs, "tps")
            cells = [str(c), target, f"{tps:,.0f}", f"{tps / med(b, 'tps'):.2f}x"]
            if target == "direct":
                cells += [""] * (4 if base_cpu else 3)
            else:
                cpu = med(rs, "cpu_us_per_tx_steady")
                cells += [f"{med(rs, 'user_us_per_tx'):.2f}", f"{med(rs, 'sys_us_per_tx'):.2f}",
                          f"{cpu:.2f}"]
                if base_cpu:
                    cells.append(f"{cpu / med(b, 'cpu_us_per_tx_steady'):.2f}x")
            rows.append("| " + " | ".join(cells) + f" | {machine_cells(rs)} |")
    return rows


def run_line(args, rev):
    door = "" if args.door == "pg" else " --door mysql"
    strace = " --strace" if args.strace and args.door == "pg" else ""
    return (f"`bash bench/relay.sh{door} --duration {args.duration} --reps {args.reps}{strace}` "
            f"at {rev}; "
            f"medians of {args.reps} interleaved repetitions.")


def pg_section(args, clients, results, calls):
    out = [PG_HEADING, "", run_line(args, git_rev()) + f" {pgbouncer_version()}; "
           "`pgbench -S -M simple`. CPU is the proxy's own (all threads, from /proc) per "
           "transaction with the clients' logins taken off. The relays give each client its own "
           "server connection (at 100 clients, 100 server backends against the proxies' 20, so "
           "their TPS there is not comparable) and only copy bytes, so no proxy that reads the "
           "protocol can do less work in user space; their system time is what the kernel "
           "charges a proxy for moving each transaction's four messages.", "", MACHINE_NOTE, ""]
    out += table(clients, PG_TARGETS, results, "pgbouncer", "tx")
    if calls:
        out += ["", "System calls per transaction (`strace -c -f`, `pgbench -S -M simple -c 10 -t "
                "2000`; the 10 logins are included, and **all** counts every call):", "",
                "| target | " + " | ".join(["sendto", "recvfrom", "epoll_wait", "io_uring_enter",
                                             "all"]) + " |", "| --- |" + " ---: |" * 5]
        for target, c in calls.items():
            cells = [f"{c.get(k, 0):.2f}" for k in ("sendto", "recvfrom", "epoll_wait",
                                                    "io_uring_enter")]
            out.append(f"| {target} | " + " | ".join(cells) + f" | {sum(c.values()):.2f} |")
    return out


def mysql_section(args, clients, results, calls):
    out = [MYSQL_HEADING, "", run_line(args, git_rev()) + " sysbench oltp_point_select "
           "(server-side prepared statements) against a sandbox MariaDB; poolguard's `[mysql]` "
           "door in transaction mode with a pool of 16; CPU per statement (the threads' logins "
           "included: a few against hundreds of thousands of statements).", "",
           machine_note("sysbench, MariaDB, the proxies and this script",
                        "the benchmark's own sysbench threads and server threads"), ""]
    return out + table(clients, MYSQL_TARGETS, results, "direct", "statement")


def git_rev():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def write(path, section):
    """Replaces this door's section of `path` (the other door's stays)."""
    sections = {}
    if os.path.exists(path):
        current = None
        for line in open(path).read().splitlines():
            if line.startswith("## "):
                current = line
                sections[current] = []
            elif current:
                sections[current].append(line)
    sections[section[0]] = section[1:]
    out = [TITLE, ""]
    for heading in (PG_HEADING, MYSQL_HEADING):
        if heading in sections:
            out += [heading, *sections[heading]]
            if out[-1] != "":
                out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
