"""sysbench against a sandbox MariaDB, directly and through poolguard's MySQL front door
(transaction mode, pool of 16); writes the "## MySQL: sysbench" section of bench/RESULTS.md.

Usage: sysbench.py [--duration S] [--reps N] [--pool N] [--no-write]

Runs oltp_read_only and oltp_read_write at 16 and 64 threads, direct and through poolguard,
interleaved (the order of direct/poolguard alternates per repetition) and repeated; records TPS,
p95 latency and the poolguard/direct ratio. The machine's load average is sampled before every
run and reported, since the machine may be shared.
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "poolguard")
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")
HEADER = "## MySQL: sysbench"

ap = argparse.ArgumentParser()
ap.add_argument("--duration", type=int, default=10)
ap.add_argument("--reps", type=int, default=2)
ap.add_argument("--pool", type=int, default=16)
ap.add_argument("--no-write", action="store_true")
args = ap.parse_args()

WORKLOADS = ["oltp_read_only", "oltp_read_write"]
THREADS = [16, 64]
TABLES, TABLE_SIZE = 4, 10000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def loadavg():
    with open("/proc/loadavg") as f:
        return tuple(float(x) for x in f.read().split()[:3])


def start_sandbox():
    p = subprocess.Popen(
        [BIN, "sandbox", "--engine", "mariadb", "--max-connections", "200",
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
            return p, info
    raise SystemExit("sandbox not ready")


def start_poolguard(db_port, workdir):
    port = free_port()
    cfg = os.path.join(workdir, "poolguard.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[mysql]
listen = "127.0.0.1:{port}"

[[backends]]
name = "maria"
protocol = "mysql"
hosts = ["127.0.0.1:{db_port}"]
max_connections = {args.pool + 4}

[[databases]]
name = "bank"
backend = "maria"
pool_mode = "transaction"
pool_size = {args.pool}

[[users]]
name = "app"
password = "app-secret"

[limits]
acquire_timeout = "30s"
""")
    log = open(os.path.join(workdir, "poolguard.log"), "w")
    p = subprocess.Popen([BIN, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            if p.poll() is not None:
                raise SystemExit("poolguard exited early")
            time.sleep(0.1)
    raise SystemExit("poolguard did not listen")


def sysbench(workload, port, extra, timeout):
    cmd = ["sysbench", workload, "--db-driver=mysql", "--mysql-host=127.0.0.1",
           f"--mysql-port={port}", "--mysql-user=app", "--mysql-password=app-secret",
           "--mysql-db=bank", f"--tables={TABLES}", f"--table-size={TABLE_SIZE}"] + extra
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def parse(report):
    tps = re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", report)
    p95 = re.search(r"95th percentile:\s+([\d.]+)", report)
    errs = re.search(r"ignored errors:\s+(\d+)", report)
    return (float(tps.group(1)) if tps else None, float(p95.group(1)) if p95 else None,
            int(errs.group(1)) if errs else None)


def main():
    sandbox, info = start_sandbox()
    db_port = int(info["PORT"])
    work = tempfile.mkdtemp(prefix="pg-sysbench-")
    pg, pg_port = start_poolguard(db_port, work)
    results = {}  # (workload, threads, target) -> [(tps, p95, errors)]
    loads = []
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
                        la = loadavg()
                        loads.append(la)
                        out = sysbench(workload, ports[target],
                                       [f"--threads={threads}", f"--time={args.duration}",
                                        "--percentile=95", "run"], args.duration + 120)
                        tps, p95, errs = parse(out.stdout)
                        if out.returncode != 0 or tps is None:
                            print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
                        results.setdefault((workload, threads, target), []).append(
                            (tps or 0.0, p95 or 0.0, errs if errs is not None else -1))
                        print(f"rep {rep + 1} {workload} {threads} threads {target}: "
                              f"{tps} tps, p95 {p95} ms, ignored errors {errs}, load {la[0]}",
                              file=sys.stderr, flush=True)
    finally:
        pg.send_signal(signal.SIGTERM)
        sandbox.send_signal(signal.SIGTERM)
        pg.wait(timeout=30)
        sandbox.wait(timeout=60)
    loads.append(loadavg())
    section = render(results, loads)
    print(section)
    if not args.no_write:
        write(section)


def render(results, loads):
    one = [l[0] for l in loads]
    ver = subprocess.run(["sysbench", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        HEADER, "",
        f"{ver}, sandbox MariaDB (max_connections 200) on 127.0.0.1; poolguard release build, "
        f"`[mysql]` front door, transaction mode, pool_size {args.pool}, sysbench's default "
        f"server-side prepared statements. `--tables={TABLES} --table-size={TABLE_SIZE}`, "
        f"{args.duration} s per run, {args.reps} repetitions, direct and poolguard interleaved "
        "(order alternating per repetition). Written by `bench/sysbench.sh`.", "",
        f"**Machine: {os.cpu_count()} cores, shared with other work during this run** (other "
        f"builds and tests were running): 1-minute load average {min(one):.2f} to {max(one):.2f} "
        f"over the runs (mean {statistics.mean(one):.2f}). Absolute figures are therefore noisy; "
        "the ratio between interleaved runs is the more meaningful number.", "",
        "| workload | threads | direct TPS (reps) | poolguard TPS (reps) | poolguard/direct TPS "
        "| direct p95 ms | poolguard p95 ms | errors direct / poolguard |",
        "|---|---:|---|---|---:|---:|---:|---|",
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
            reps = lambda r: " / ".join(f"{x[0]:.0f}" for x in r)  # noqa: E731
            errs = f"{sum(x[2] for x in d)} / {sum(x[2] for x in p)}"
            lines.append(f"| {w} | {t} | {dt:.0f} ({reps(d)}) | {pt:.0f} ({reps(p)}) | "
                         f"{ratio:.2f} | {dp:.2f} | {pp:.2f} | {errs} |")
    lines += ["", "TPS is the mean of the repetitions (each shown in brackets); p95 is the mean "
              "of the repetitions' 95th-percentile latency; errors are sysbench's ignored "
              "errors summed.", ""]
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
