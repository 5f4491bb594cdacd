"""The floor under a proxy's CPU per transaction, and whether io_uring lowers it (issue 18).

Runs `pgbench -S -M simple` against a sandbox PostgreSQL directly, through PgBouncer and
poolguard (transaction mode, pool of 20, as in bench/pgbench.py), and through `bench/relay`, a
bare one-thread byte relay that gives every client its own server connection and does nothing
but copy bytes: once over level-triggered epoll (the system calls an event-loop proxy makes)
and once over io_uring (one receive always posted per socket, completions reaped when the loop
submits). Interleaved repetitions; each proxy's user and system CPU per transaction without the
clients' logins (bench/pgbench.py's `measure`), and the machine's load and other CPU. Writes
bench/RELAY.md.

With --strace, also counts each proxy's system calls per transaction (`strace -c -f` over
`pgbench -S -t 2000` with 10 clients; strace slows the proxy, so these are counts, not times).

Usage: bench/relay.sh [--duration 10] [--reps 2] [--clients 10 --clients 100] [--strace]
                      [--out FILE]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from benchlib import (DB, PASSWORD, ROOT, USER, PgBouncer, PgSandbox, Poolguard, Proxy, free_port,
                      log)
from pgbench import MACHINE_NOTE, machine_cells, measure, pgbouncer_version

RELAY = os.path.join(ROOT, "bench", "relay", "target", "release", "relay")


class Relay(Proxy):
    """bench/relay in `mode` (epoll or uring), in front of the server's TCP port."""

    def __init__(self, backend_port, mode):
        self.dir = tempfile.mkdtemp(prefix="poolguard-bench-relay-")
        self.port = free_port()
        self._start([RELAY, mode, f"127.0.0.1:{self.port}", f"127.0.0.1:{backend_port}"], (),
                    30, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))


TARGETS = ("direct", "pgbouncer", "poolguard", "relay-epoll", "relay-uring")


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--clients", type=int, action="append")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RELAY.md"))
    args = ap.parse_args()
    clients = args.clients or [10, 100]

    pg = PgSandbox(max_connections=max(clients) + 60)
    workdir = tempfile.mkdtemp(prefix="poolguard-bench-relay-")
    procs = []
    try:
        pg.pgbench_init(scale=10)
        procs = [PgBouncer(pg.port), Poolguard(pg.port), Relay(pg.port, "epoll"),
                 Relay(pg.port, "uring")]
        by_name = dict(zip(TARGETS[1:], procs))
        results = {}
        for rep in range(args.reps):
            for c in clients:
                for target in TARGETS:
                    proc = by_name.get(target)
                    port = proc.port if proc else pg.port
                    r = measure(pg, port, proc.pid if proc else None, ["-S", "-M", "simple"],
                                c, args.duration, workdir)
                    log(f"rep {rep + 1} c{c:<4} {target:12} tps {r['tps']:8.0f}"
                        f"  user {r.get('user_us_per_tx', 0):5.2f}"
                        f"  sys {r.get('sys_us_per_tx', 0):5.2f} us/tx"
                        f"  failed {r['failed']}  load {r['load1']:.1f}"
                        f"  other {r['other_cpu_pct']:.0f}% {r['error']}")
                    results.setdefault((c, target), []).append(r)
        calls = {t: syscalls(by_name[t], workdir) for t in TARGETS[1:]} if args.strace else {}
        write(args, clients, results, calls)
        log(f"wrote {args.out}")
    finally:
        for p in procs:
            p.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def med(rs, key):
    return statistics.median(r.get(key, 0) for r in rs)


def write(args, clients, results, calls):
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    out = ["# A bare relay: the floor under a proxy's CPU, over epoll and io_uring", "",
           f"`bash bench/relay.sh --duration {args.duration} --reps {args.reps}` at {rev}; "
           f"{pgbouncer_version()}; `pgbench -S -M simple`; medians of {args.reps} interleaved "
           "repetitions. CPU is the proxy's own (all threads, from /proc) per transaction with the "
           "clients' logins taken off. The relays give each client its own server connection and "
           "only copy bytes, so no proxy that reads the protocol can do less work in user space; "
           "their system time is what the kernel charges a proxy for moving each transaction's "
           "four messages.", "", MACHINE_NOTE, "",
           "| clients | target | TPS | vs PgBouncer | user µs/tx | system µs/tx | CPU µs/tx "
           "| CPU vs PgBouncer | load | other CPU % |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for c in clients:
        base = results[(c, "pgbouncer")]
        for target in TARGETS:
            rs = results[(c, target)]
            tps = med(rs, "tps")
            cells = [str(c), target, f"{tps:,.0f}", f"{tps / med(base, 'tps'):.2f}x"]
            if target == "direct":
                cells += ["", "", "", ""]
            else:
                cpu = med(rs, "cpu_us_per_tx_steady")
                cells += [f"{med(rs, 'user_us_per_tx'):.2f}", f"{med(rs, 'sys_us_per_tx'):.2f}",
                          f"{cpu:.2f}", f"{cpu / med(base, 'cpu_us_per_tx_steady'):.2f}x"]
            out.append("| " + " | ".join(cells) + f" | {machine_cells(rs)} |")
    if calls:
        out += ["", "System calls per transaction (`strace -c -f`, `pgbench -S -M simple -c 10 -t "
                "2000`; the 10 logins are included, and **all** counts every call):", "",
                "| target | " + " | ".join(["sendto", "recvfrom", "epoll_wait", "io_uring_enter",
                                             "all"]) + " |", "| --- |" + " ---: |" * 5]
        for target, c in calls.items():
            cells = [f"{c.get(k, 0):.2f}" for k in ("sendto", "recvfrom", "epoll_wait",
                                                    "io_uring_enter")]
            out.append(f"| {target} | " + " | ".join(cells) + f" | {sum(c.values()):.2f} |")
    out.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
