"""User-space instructions and malloc calls per transaction of a proxy, with callgrind: the
measure that does not depend on what else the machine runs, unlike TPS or CPU time.

Usage: callgrind.py [--door pg|mysql] [--target poolguard|pgbouncer] [--events N] [--warmup N]
                    [--threads N] [--workload NAME] [--protocol simple] [--mode transaction]
                    [--out FILE] [--strace] [--bin PATH]

--door pg (the default): a sandbox PostgreSQL (pgbench tables, scale 1) and poolguard's
PostgreSQL door (transaction mode, pool of 20; as bench/pgbench.py), driven by
`pgbench -S -M simple` (--workload: pgbench's builtin script, --protocol: its -M) from --threads
clients; a unit is a pgbench transaction. --target pgbouncer measures Debian's PgBouncer in the
same place instead.
--door mysql: a sandbox MariaDB (sysbench tables) and poolguard's MySQL door (--mode, pool of
16), driven by sysbench --workload (oltp_point_select); a unit is a statement (sysbench's
"queries"), one whole transaction for oltp_point_select.

The proxy runs under `valgrind --tool=callgrind` (poolguard with `--threads 1`). After --warmup
units, two measured runs follow: a short one (--events / 4) and a long one (--events;
16,000 transactions by default for pg: PgBouncer's figure moved by up to 9% between runs of
4,000 and by 3% at 16,000, poolguard's by 0.5%; the counts depend a little on how many events
each wake-up finds, which the clients' timing decides). Each run
connects its clients anew, so each holds the same logins and disconnects; the difference of the
two, divided by the difference of their units, is the work per transaction alone (PgBouncer
derives a SCRAM key per login, 4,096 PBKDF2 rounds, which would otherwise swamp the figure).
The long run's own total per unit, logins included, is printed too (the figure earlier
bench/PROFILE.md tables used).

How the counters are read: poolguard's counters are zeroed (`callgrind_control -z`) and dumped
(`callgrind_control -d`) around each run. Callgrind only answers those requests while the
program runs code, and an idle PgBouncer sleeps in epoll_wait (an earlier attempt hung there),
so PgBouncer is measured by whole processes instead: one runs the warm-up and the short run,
another the warm-up and the long run, each dumping at exit; start-up, warm-up and shutdown
cancel in the difference. The long run's dump is kept (--out) for `callgrind_annotate`.

Extra valgrind options can be given in the environment variable CG_EXTRA (for instance
`CG_EXTRA="--cache-sim=yes"` for simulated cache misses per function).

With --strace (poolguard only), poolguard runs under `strace -c -f` instead and the system
calls per unit are printed (warm-up and logins included).
"""
import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import benchlib
from benchlib import (DB, PASSWORD, USER, POOLGUARD, PgBouncer, PgSandbox, Poolguard,
                      free_port, mysql_config, start_mariadb_sandbox, wait_listening)

# Under valgrind a proxy starts slowly (poolguard derives SCRAM verifiers at start).
READY_TIMEOUT = 300


def totals(path):
    """Instructions and malloc calls recorded in one callgrind dump."""
    ir, mallocs = 0, 0
    names, cfn = {}, None
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                ir = int(line.split()[1])
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3).strip()
                if m.group(1) == "cfn":
                    cfn = names.get(m.group(2), "")
                continue
            if line.startswith("calls=") and cfn == "malloc":
                mallocs += int(line[6:].split()[0])
    return ir, mallocs


def valgrind(out_base):
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_base}", *os.environ.get("CG_EXTRA", "").split()]


def latest_dump(base):
    dumps = sorted(glob.glob(base + "*"), key=os.path.getmtime)
    if not dumps:
        raise SystemExit(f"no callgrind dump at {base}")
    return dumps[-1]


def control(pid, flag):
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True,
                   timeout=300)


def per_unit(short, long, out):
    """The figures from two measured runs, each (units, instructions, mallocs)."""
    (u1, i1, m1), (u2, i2, m2) = short, long
    if u2 <= u1:
        raise SystemExit(f"the long run did no more work than the short one ({u2} <= {u1})")
    return {"units": u2 - u1, "ir_per_unit": (i2 - i1) / (u2 - u1),
            "mallocs_per_unit": (m2 - m1) / (u2 - u1), "ir_per_unit_with_logins": i2 / u2,
            "mallocs_per_unit_with_logins": m2 / u2, "dump": out}


def by_control(pid, base, warm, run, events, out):
    """Zero / dump around each measured run of a process that keeps running code (poolguard)."""
    warm()
    figures = []
    for n in (max(events // 4, 1), events):
        control(pid, "-z")
        units = run(n)
        control(pid, "-d")
        figures.append((units, *totals(latest_dump(base))))
    shutil.copy(latest_dump(base), out)
    return per_unit(*figures, out)


def by_whole_process(start, warm, run, events, out, work):
    """One process per measured run, dumped at exit (PgBouncer): `start(base)` returns a
    running proxy with a stop() method and a port."""
    figures = []
    for i, n in enumerate((max(events // 4, 1), events)):
        base = os.path.join(work, f"whole-{i}.out")
        proxy = start(base)
        try:
            warm(proxy.port)
            units = run(proxy.port, n)
        finally:
            # SIGTERM: PgBouncer's immediate shutdown; callgrind writes the dump at exit.
            proxy.stop(timeout=300)
        figures.append((units, *totals(base)))
    shutil.copy(os.path.join(work, "whole-1.out"), out)
    return per_unit(*figures, out)


# --- PostgreSQL door ---------------------------------------------------------------------

def pgbench(port, transactions, clients=4, workload="select-only", protocol="simple"):
    """Runs about `transactions` pgbench transactions (a multiple of `clients`) and returns how
    many were processed."""
    per_client = max(transactions // clients, 1)
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-n", "-b", workload,
           "-M", protocol, "-c", str(clients), "-j", "1", "-t", str(per_client), DB]
    out = subprocess.run(cmd, env=dict(os.environ, PGPASSWORD=PASSWORD), capture_output=True,
                         text=True, timeout=1800)
    processed = re.search(r"actually processed: (\d+)", out.stdout)
    if out.returncode != 0 or not processed:
        raise SystemExit(f"pgbench failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    return int(processed.group(1))


def measure_pg(pg_port, target="poolguard", events=16000, warmup=800, clients=4,
               workload="select-only", protocol="simple", out=None, binary=None):
    """Instructions per pgbench transaction of `target` in front of the PostgreSQL on
    `pg_port` (database bank with pgbench's tables, user app)."""
    out = out or os.path.join(tempfile.gettempdir(), f"{target}-pg.callgrind")
    work = tempfile.mkdtemp(prefix="poolguard-callgrind-")
    # PgBouncer switches to the postgres account and writes its dump as that account.
    os.chmod(work, 0o777)

    def run(port, n):
        return pgbench(port, n, clients, workload, protocol)

    try:
        if target == "pgbouncer":
            return by_whole_process(
                lambda base: PgBouncer(pg_port, wrap=valgrind(base), ready_timeout=READY_TIMEOUT),
                lambda port: run(port, warmup), run, events, out, work)
        base = os.path.join(work, "cg.out")
        guard = Poolguard(pg_port, wrap=valgrind(base), ready_timeout=READY_TIMEOUT, threads=1,
                          binary=binary)
        try:
            return by_control(guard.pid, base, lambda: run(guard.port, warmup),
                              lambda n: run(guard.port, n), events, out)
        finally:
            guard.stop(timeout=300)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- MySQL door --------------------------------------------------------------------------

def run_sysbench(port, workload, extra):
    out = benchlib.sysbench(workload, port, extra)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
    return out.stdout


def start_mysql_poolguard(db_port, work, mode, tool, binary):
    port = free_port()
    cfg = os.path.join(work, "poolguard.toml")
    mysql_config(cfg, port, db_port, 16, 20, mode, 'acquire_timeout = "60s"')
    log = open(os.path.join(work, "poolguard.log"), "w")
    p = subprocess.Popen(tool + [binary, "--threads", "1", "run", "--config", cfg],
                         stdout=subprocess.DEVNULL, stderr=log,
                         env={**os.environ, "RUST_LOG": "warn"})
    wait_listening(p, port, READY_TIMEOUT, "poolguard (see " + log.name + ")")
    return p, port


def strace_counts(p, base, units, label):
    # SIGTERM to poolguard itself (strace would die of it and leave poolguard behind).
    with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
        child = int(f.read().split()[0])
    os.kill(child, signal.SIGTERM)
    p.wait(timeout=120)
    print(f"{label}: {units} units; system calls per unit:")
    with open(base) as f:
        for line in f:
            cols = line.split()
            if len(cols) >= 5 and cols[3].isdigit() and cols[-1] != "total":
                print(f"  {cols[-1]:16} {int(cols[3]) / units:.3f}")


def mysql_door(args):
    sandbox, db_port = start_mariadb_sandbox(100)
    work = tempfile.mkdtemp(prefix="poolguard-callgrind-mysql-")
    p = None
    try:
        run_sysbench(db_port, args.workload, ["--threads=4", "prepare"])
        base = os.path.join(work, "cg.out")
        tool = ["strace", "-c", "-f", "-o", base] if args.strace else valgrind(base)
        p, port = start_mysql_poolguard(db_port, work, args.mode, tool, args.bin)
        common = [f"--threads={args.threads}", "--time=0"]

        def run(n):
            text = run_sysbench(port, args.workload, common + [f"--events={n}", "run"])
            return int(re.search(r"queries:\s+(\d+)", text).group(1))

        if args.strace:
            units = run(args.events)
            strace_counts(p, base, units, f"{args.workload} {args.mode}")
            p = None
            return
        r = by_control(p.pid, base, lambda: run(args.warmup), run, args.events, args.out)
        report(f"mysql door, {args.workload} {args.mode}", "statement", r)
    finally:
        if p is not None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def pg_door(args):
    pg = PgSandbox(max_connections=100)
    try:
        pg.pgbench_init(scale=1)
        if args.strace:
            work = tempfile.mkdtemp(prefix="poolguard-strace-")
            base = os.path.join(work, "strace.out")
            guard = Poolguard(pg.port, wrap=["strace", "-c", "-f", "-o", base],
                              ready_timeout=READY_TIMEOUT, threads=1, binary=args.bin)
            units = pgbench(guard.port, args.events, args.threads, args.workload, args.protocol)
            strace_counts(guard.proc, base, units, f"pg door, {args.workload} {args.protocol}")
            shutil.rmtree(guard.dir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            return
        r = measure_pg(pg.port, args.target, args.events, args.warmup, args.threads,
                       args.workload, args.protocol, args.out, args.bin)
        report(f"pg door, {args.target}, pgbench {args.workload} -M {args.protocol}",
               "transaction", r)
    finally:
        pg.stop()


def report(label, unit, r):
    print(f"{label}: {r['units']} {unit}s measured, {r['ir_per_unit']:,.0f} instructions and "
          f"{r['mallocs_per_unit']:.2f} malloc calls per {unit} (with the clients' logins: "
          f"{r['ir_per_unit_with_logins']:,.0f} and {r['mallocs_per_unit_with_logins']:.2f}; "
          f"dump: {r['dump']})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--door", choices=("pg", "mysql"), default="pg")
    ap.add_argument("--target", choices=("poolguard", "pgbouncer"), default="poolguard",
                    help="the proxy to measure (pgbouncer: --door pg only)")
    ap.add_argument("--events", type=int, help="units in the long measured run "
                    "(default: 16000 transactions for pg, 20000 events for mysql)")
    ap.add_argument("--warmup", type=int, help="units before the counters start "
                    "(default: 800 for pg, 2000 for mysql)")
    ap.add_argument("--threads", type=int, default=4, help="client connections")
    ap.add_argument("--workload", help="pgbench builtin (select-only) or sysbench workload "
                    "(oltp_point_select)")
    ap.add_argument("--protocol", default="simple", help="pgbench -M (pg door)")
    ap.add_argument("--mode", default="transaction", help="pool mode (mysql door)")
    ap.add_argument("--out", help="where to keep the long run's dump")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--bin", default=POOLGUARD, help="the poolguard binary (e.g. an older build)")
    args = ap.parse_args()
    pg = args.door == "pg"
    if args.target == "pgbouncer" and (not pg or args.strace):
        ap.error("--target pgbouncer is measured on --door pg, under callgrind only")
    args.events = args.events or (16000 if pg else 20000)
    args.warmup = args.warmup or (800 if pg else 2000)
    args.workload = args.workload or ("select-only" if pg else "oltp_point_select")
    args.out = args.out or os.path.join(tempfile.gettempdir(),
                                        f"{args.target}-{args.door}.callgrind")
    (pg_door if pg else mysql_door)(args)


if __name__ == "__main__":
    sys.exit(main())
