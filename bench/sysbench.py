"""sysbench against a sandbox MariaDB, directly and through poolguard's MySQL front door
(transaction mode, pool of 16); writes the "## MySQL: sysbench" section of bench/RESULTS.md.

Usage: sysbench.py [--duration S] [--reps N] [--pool N] [--threads 16,64,256]
                   [--workloads oltp_point_select,oltp_read_only] [--idle N] [--no-write]

Runs each workload at each thread count, direct and through poolguard, interleaved (the order of
direct/poolguard alternates per repetition) and repeated; records TPS, p95 latency, the
poolguard/direct ratio and poolguard's CPU time (utime + stime from /proc) per statement
(sysbench's "queries: total"). Then measures poolguard's RSS with N idle logged-in MySQL clients
(bench/myclients.py). Every run also records what else the machine did meanwhile: the 1-minute
load average and the CPU used by processes other than the benchmark's own (sysbench, MariaDB,
poolguard), with benchlib.MachineMeter.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile

from benchlib import (POOLGUARD as BIN, ROOT, SYSBENCH_TABLE_SIZE, SYSBENCH_TABLES,
                      MachineMeter, cpu_seconds, free_port, idle_footprint, machine_note, mysql_config,
                      parse_sysbench, spread, start_mariadb_sandbox, sysbench, wait_listening)

RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")
HEADER = "## MySQL: sysbench"

ap = argparse.ArgumentParser()
ap.add_argument("--duration", type=int, default=10)
ap.add_argument("--reps", type=int, default=2)
ap.add_argument("--pool", type=int, default=16)
ap.add_argument("--threads", default="16,64,256")
ap.add_argument("--workloads", default="oltp_point_select,oltp_read_only")
ap.add_argument("--idle", type=int, default=10000)
ap.add_argument("--no-write", action="store_true")
args = ap.parse_args()

WORKLOADS = args.workloads.split(",")
THREADS = [int(t) for t in args.threads.split(",")]


def start_poolguard(db_port, workdir):
    port = free_port()
    cfg = os.path.join(workdir, "poolguard.toml")
    mysql_config(cfg, port, db_port, args.pool, args.pool + 4,
                 limits=f'acquire_timeout = "30s"\n'
                 f"max_client_connections = {max(args.idle, max(THREADS)) + 1000}")
    log = open(os.path.join(workdir, "poolguard.log"), "w")
    p = subprocess.Popen([BIN, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    wait_listening(p, port, 30)
    return p, port


def main():
    sandbox, db_port = start_mariadb_sandbox(max(THREADS) + 64)
    work = tempfile.mkdtemp(prefix="pg-sysbench-")
    pg, pg_port = start_poolguard(db_port, work)
    # (workload, threads, target) -> [(tps, p95, errors, cpu us per statement, machine fields)]
    results = {}
    idle = None
    try:
        out = sysbench("oltp_read_write", db_port, ["--threads=4", "prepare"], 300)
        if out.returncode != 0:
            raise SystemExit(out.stdout + out.stderr)
        ports = {"direct": db_port, "poolguard": pg_port}
        for rep in range(args.reps):
            order = ["direct", "poolguard"] if rep % 2 == 0 else ["poolguard", "direct"]
            for workload in WORKLOADS:
                for threads in THREADS:
                    for target in order:
                        cpu_before = cpu_seconds(pg.pid)
                        with MachineMeter() as machine:
                            out = sysbench(workload, ports[target],
                                           [f"--threads={threads}", f"--time={args.duration}",
                                            "--percentile=95", "run"], args.duration + 120)
                        cpu = cpu_seconds(pg.pid) - cpu_before
                        m = machine.fields
                        tps, p95, errs, queries = parse_sysbench(out.stdout)
                        if out.returncode != 0 or tps is None:
                            print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
                        per_stmt = cpu * 1e6 / queries if target == "poolguard" and queries else 0.0
                        results.setdefault((workload, threads, target), []).append(
                            (tps or 0.0, p95 or 0.0, errs if errs is not None else -1, per_stmt, m))
                        print(f"rep {rep + 1} {workload} {threads} threads {target}: "
                              f"{tps} tps, p95 {p95} ms, ignored errors {errs}, "
                              f"proxy cpu {per_stmt:.1f} us/statement, load {m['load1']}, "
                              f"other cpu {m['other_cpu_pct']:.0f}%",
                              file=sys.stderr, flush=True)
        if args.idle:
            with MachineMeter() as machine:
                idle = idle_footprint(pg.pid, "myclients.py",
                                      ["idle", str(pg_port), "app", "app-secret", "bank",
                                       str(args.idle)], args.idle)
            idle.update(machine.fields)
            print(f"idle: {idle}", file=sys.stderr, flush=True)
    finally:
        pg.send_signal(signal.SIGTERM)
        sandbox.send_signal(signal.SIGTERM)
        pg.wait(timeout=30)
        sandbox.wait(timeout=60)
    section = render(results, idle)
    print(section)
    if not args.no_write:
        write(section)


def machine(rs, key, fmt):
    return spread([r[4][key] for r in rs], fmt)


def render(results, idle):
    ver = subprocess.run(["sysbench", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        HEADER, "",
        f"{ver}, sandbox MariaDB on 127.0.0.1; poolguard release build, "
        f"`[mysql]` front door, transaction mode, pool_size {args.pool}, sysbench's default "
        "server-side prepared statements. "
        f"`--tables={SYSBENCH_TABLES} --table-size={SYSBENCH_TABLE_SIZE}`, "
        f"{args.duration} s per run, {args.reps} repetitions, direct and poolguard interleaved "
        "(order alternating per repetition). Written by `bench/sysbench.sh`.", "",
        f"**Machine: {os.cpu_count()} cores, possibly shared with other work.** "
        + machine_note("sysbench, MariaDB, poolguard and this script",
                       "sysbench's own threads (up to 256)")
        + " In each row: direct runs / poolguard runs. Absolute figures move with other work; "
        "the ratio between interleaved runs is the more meaningful number, and "
        "`bench/callgrind.py --door mysql`'s instruction counts (see bench/PROFILE.md) the "
        "stable one.", "",
        "| workload | threads | direct TPS (reps) | poolguard TPS (reps) | poolguard/direct TPS "
        "| direct p95 ms | poolguard p95 ms | proxy CPU µs/statement | errors direct / poolguard "
        "| load, direct / poolguard | other CPU, % of one core, direct / poolguard |",
        "|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for w in WORKLOADS:
        for t in THREADS:
            d = results.get((w, t, "direct"), [])
            p = results.get((w, t, "poolguard"), [])
            if not d or not p:
                continue
            dt, pt = statistics.mean(x[0] for x in d), statistics.mean(x[0] for x in p)
            ratio = pt / dt if dt else float("nan")
            dp, pp = statistics.mean(x[1] for x in d), statistics.mean(x[1] for x in p)
            cpu = statistics.mean(x[3] for x in p)
            reps = lambda r: " / ".join(f"{x[0]:.0f}" for x in r)  # noqa: E731
            errs = f"{sum(x[2] for x in d)} / {sum(x[2] for x in p)}"
            lines.append(f"| {w} | {t} | {dt:.0f} ({reps(d)}) | {pt:.0f} ({reps(p)}) | "
                         f"{ratio:.2f} | {dp:.2f} | {pp:.2f} | {cpu:.1f} | {errs} | "
                         f"{machine(d, 'load1', '{:.1f}')} / {machine(p, 'load1', '{:.1f}')} | "
                         f"{machine(d, 'other_cpu_pct', '{:.0f}')} / "
                         f"{machine(p, 'other_cpu_pct', '{:.0f}')} |")
    lines += ["", "TPS is the mean of the repetitions (each shown in brackets); p95 is the mean "
              "of the repetitions' 95th-percentile latency; proxy CPU is poolguard's user + "
              "system time over the run divided by the statements sysbench ran (mean of the "
              "repetitions); errors are sysbench's ignored errors summed.", ""]
    if idle:
        lines += ["Idle clients: logged-in MySQL clients (mysql_native_password, "
                  "bench/myclients.py) held open and idle; RSS of poolguard from /proc.", "",
                  "| clients | failed | RSS before | RSS after | bytes per idle client | load "
                  "| other CPU, % of one core |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                  f"| {idle['clients']} | {idle['failed']} | {idle['rss_before_kib']} KiB | "
                  f"{idle['rss_after_kib']} KiB | {idle['bytes_per_client']:.0f} | "
                  f"{idle['load1']:.1f} | {idle['other_cpu_pct']:.0f} |", ""]
    return "\n".join(lines)


def write(section):
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    i = text.find(HEADER + "\n")
    if i < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        j = text.find("\n## ", i + len(HEADER))
        text = text[:i] + section + (text[j + 1:] if j >= 0 else "")
    with open(RESULTS, "w") as f:
        f.write(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
