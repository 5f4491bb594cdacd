"""poolguard vs PgBouncer vs direct PostgreSQL, measured in one run on this machine.

Starts a sandbox PostgreSQL (poolguard sandbox), Debian's PgBouncer and poolguard (release
build), both proxies in transaction mode with a pool of 20, and runs pgbench scenarios
interleaved (direct, PgBouncer, poolguard, then again) and repeated. Records TPS, mean and p99
latency (from pgbench's per-transaction log), failures, and each proxy's CPU time per
transaction (utime+stime from /proc over the run). Then measures RSS with N idle authenticated
clients and a storm of M clients connecting at once. Every row also records what else the
machine did during its run: the 1-minute load average and the CPU used by processes other than
the benchmark's own (benchlib.MachineMeter). With --callgrind, the user-space instructions per
transaction of both proxies (bench/callgrind.py) are added: the figure that shows progress
through the noise of a shared machine. Writes bench/RESULTS.md.

Usage: bench/pgbench.sh [--duration 15] [--reps 2] [--idle 10000] [--storm 5000] [--only NAME]
                        [--callgrind] [--out FILE]
"""
import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import callgrind
from benchlib import (DB, PASSWORD, PG_POOL as POOL, USER,
                      ROOT, MachineMeter, PgBouncer, PgSandbox, Poolguard, cpu_split, log,
                      machine_note, spread, idle_footprint as idle_clients_footprint)


def pgbench(port, args, clients, duration, workdir, per_client=None):
    """One pgbench run for `duration` seconds, or of `per_client` transactions per client."""
    for f in glob.glob(os.path.join(workdir, "pgbench_log.*")):
        os.remove(f)
    jobs = min(2, clients)
    length = ["-t", str(per_client)] if per_client else ["-T", str(duration)]
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-n",
           "-c", str(clients), "-j", str(jobs), *length, "-l", *args, DB]
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    tps = re.search(r"tps = ([\d.]+) \(without", text)
    processed = re.search(r"actually processed: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    lat = []
    for f in glob.glob(os.path.join(workdir, "pgbench_log.*")):
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat.append(int(parts[2]))
    lat.sort()
    return {
        "ok": out.returncode == 0 and tps is not None,
        "tps": float(tps.group(1)) if tps else 0.0,
        "transactions": int(processed.group(1)) if processed else 0,
        "failed": int(failed.group(1)) if failed else (0 if out.returncode == 0 else -1),
        "mean_ms": statistics.mean(lat) / 1000 if lat else 0.0,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] / 1000 if lat else 0.0,
        "error": "" if out.returncode == 0 else text.strip().splitlines()[-1][:200],
    }


SCENARIOS = [
    # name, pgbench args, clients, targets
    ("select simple c10", ["-S", "-M", "simple"], 10, ("direct", "pgbouncer", "poolguard")),
    ("select simple c100", ["-S", "-M", "simple"], 100, ("direct", "pgbouncer", "poolguard")),
    ("select simple c500", ["-S", "-M", "simple"], 500, ("direct", "pgbouncer", "poolguard")),
    ("select extended c10", ["-S", "-M", "extended"], 10, ("direct", "pgbouncer", "poolguard")),
    ("select extended c100", ["-S", "-M", "extended"], 100, ("direct", "pgbouncer", "poolguard")),
    ("select extended c500", ["-S", "-M", "extended"], 500, ("direct", "pgbouncer", "poolguard")),
    ("tpc-b simple c50", ["-M", "simple"], 50, ("direct", "pgbouncer", "poolguard")),
    # PgBouncer 1.18 cannot serve named prepared statements in transaction mode.
    ("select prepared c100", ["-S", "-M", "prepared"], 100, ("direct", "poolguard")),
    ("ceiling: direct c20", ["-S", "-M", "simple"], 20, ("direct",)),
    # Both proxies reach PostgreSQL over its Unix socket (a co-located server).
    ("select simple c10 unix", ["-S", "-M", "simple"], 10, ("pgbouncer", "poolguard")),
    ("select simple c100 unix", ["-S", "-M", "simple"], 100, ("pgbouncer", "poolguard")),
]


def over_unix(name):
    return name.endswith(" unix")


def measure(pg, port, pid, args, clients, duration, workdir):
    """One pgbench run through `port`; with a proxy's `pid`, its CPU per transaction over the
    run ("cpu_us_per_tx") and without the clients' logins ("cpu_us_per_tx_steady", split into
    "user_us_per_tx" and "sys_us_per_tx"), beside what else the machine did."""
    before = cpu_split(pid) if pid else (0, 0)
    with MachineMeter([pg.server_pid]) as machine:
        r = pgbench(port, args, clients, duration, workdir)
    r.update(machine.fields)
    if not pid:
        return r
    after = cpu_split(pid)
    used = sum(after) - sum(before)
    r["cpu_us_per_tx"] = used * 1e6 / r["transactions"] if r["transactions"] else 0
    # The same clients logging in and running one transaction each: what the logins cost,
    # taken off the run above (pgbench's TPS leaves its connection phase out; the CPU figure
    # must too, or a proxy that derives a SCRAM key per login looks dearer per transaction the
    # more clients log in).
    logins = pgbench(port, args, clients, duration, workdir, per_client=1)
    login = [b - a for a, b in zip(after, cpu_split(pid))]
    steady_tx = r["transactions"] - logins["transactions"]
    ok = logins["ok"] and steady_tx > 0
    for key, i in (("user_us_per_tx", 0), ("sys_us_per_tx", 1)):
        spent = (after[i] - before[i]) - login[i]
        r[key] = spent * 1e6 / steady_tx if ok else 0
    r["cpu_us_per_tx_steady"] = r["user_us_per_tx"] + r["sys_us_per_tx"]
    return r


def run_matrix(pg, proxies, duration, reps, workdir, only=None):
    """`proxies`: (PgBouncer, poolguard) over TCP and, for the ` unix` rows, over the server's
    Unix socket."""
    results = {}
    for rep in range(reps):
        for name, args, clients, targets in SCENARIOS:
            if only and name not in only:
                continue
            bouncer, guard = proxies["unix" if over_unix(name) else "tcp"]
            ports = {"direct": pg.port, "pgbouncer": bouncer.port, "poolguard": guard.port}
            pids = {"pgbouncer": bouncer.pid, "poolguard": guard.pid}
            for target in targets:
                r = measure(pg, ports[target], pids.get(target), args, clients, duration,
                            workdir)
                log(f"rep {rep + 1} {name:22} {target:9} tps {r['tps']:9.0f}  p99 {r['p99_ms']:7.2f} ms"
                    f"  failed {r['failed']}  cpu/tx {r.get('cpu_us_per_tx', 0):6.1f} us"
                    f" ({r.get('cpu_us_per_tx_steady', 0):6.1f} without logins)"
                    f"  load {r['load1']:.2f}  other cpu {r['other_cpu_pct']:.0f}% {r['error']}")
                results.setdefault((name, target), []).append(r)
    return results


def idle_footprint(pg, pid, port, n):
    with MachineMeter([pg.server_pid]) as machine:
        r = idle_clients_footprint(pid, "pgclients.py",
                                   ["idle", str(port), USER, PASSWORD, DB, str(n)], n)
    return {**r, **machine.fields}


def storm(pg, port, n):
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], pg.app_connections())
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    with MachineMeter([pg.server_pid]) as machine:
        t.start()
        out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "pgclients.py"), "storm",
                              str(port), USER, PASSWORD, DB, str(n)], capture_output=True, text=True)
        stop.set()
        t.join()
    try:
        r = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        r = {"served": 0, "failed": n, "seconds": 0, "errors": {"client": out.stderr[-300:]}}
    r["peak_server_connections"] = peak[0]
    return {**r, **machine.fields}


def median(rs, key):
    return statistics.median(r.get(key, 0) for r in rs)


MACHINE_NOTE = machine_note(
    "pgbench, the PostgreSQL server, the proxies and this script",
    "the benchmark's own pgbench threads and server processes (up to 500 backends)")


def machine_cells(rs):
    return (f"{spread([r['load1'] for r in rs], '{:.1f}')} | "
            f"{spread([r['other_cpu_pct'] for r in rs], '{:.0f}')}")


def write_results(path, results, idle, storms, args, profile_note, instructions=None):
    lines = []
    lines.append("# Benchmark results\n")
    lines.append(f"Measured by `bench/pgbench.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
                 f"{os.cpu_count()} cores; pgbench, PostgreSQL ({pg_version()}), and the proxies share them. "
                 f"Pool of {POOL} in both proxies (transaction mode), {args.duration} s per run, "
                 f"{args.reps} interleaved repetitions (direct, PgBouncer, poolguard, then again); "
                 "medians shown. PgBouncer: Debian's " + pgbouncer_version() + ". "
                 "Latency from pgbench's per-transaction log (`-l`).\n")
    lines.append(MACHINE_NOTE + "\n")
    lines.append("**proxy CPU µs/tx** is the proxy's user and system time per transaction "
                 "without the clients' logins, like pgbench's TPS (which leaves its connection "
                 "phase out): after each run the same clients log in again and run one "
                 "transaction each, and that run's CPU and transactions are taken off. "
                 "**with logins** is the whole run's CPU per transaction (what earlier results "
                 "showed; PgBouncer derives a SCRAM key per login, 4,096 PBKDF2 rounds, so at "
                 "500 clients its logins weigh on that figure).\n")
    lines.append("| scenario | target | TPS | mean ms | p99 ms | failed | proxy CPU µs/tx | with logins | vs direct | vs PgBouncer | load | other CPU, % of one core |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _, clients, targets in SCENARIOS:
        for target in targets:
            rs = results.get((name, target))
            if not rs:
                continue
            tps = median(rs, "tps")
            d = results.get((name, "direct"))
            b = results.get((name, "pgbouncer"))
            d_tps = median(d, "tps") if d else 0
            b_tps = median(b, "tps") if b else 0
            vs_d = f"{tps / d_tps:.2f}x" if d_tps and target != "direct" else ""
            vs_b = f"{tps / b_tps:.2f}x" if b_tps and target == "poolguard" else ""
            cpu = f"{median(rs, 'cpu_us_per_tx_steady'):.1f}" if target != "direct" else ""
            cpu_all = f"{median(rs, 'cpu_us_per_tx'):.1f}" if target != "direct" else ""
            failed = max(r["failed"] for r in rs)
            lines.append(f"| {name} | {target} | {tps:.0f} | {median(rs, 'mean_ms'):.2f} | "
                         f"{median(rs, 'p99_ms'):.2f} | {failed} | {cpu} | {cpu_all} | {vs_d} | {vs_b} | "
                         f"{machine_cells(rs)} |")
    lines.append("")
    for key, what in (("cpu_us_per_tx_steady", "without logins"), ("cpu_us_per_tx", "with logins")):
        lines.append(f"CPU per transaction ratio (poolguard / PgBouncer), {what}: " + ", ".join(
            f"{name}: {median(results[(name, 'poolguard')], key) / median(results[(name, 'pgbouncer')], key):.2f}x"
            for name, _, _, targets in SCENARIOS
            if (name, "poolguard") in results and (name, "pgbouncer") in results
            and median(results[(name, "pgbouncer")], key) > 0) + "\n")
    if instructions:
        lines.append("## Instructions per transaction (callgrind)\n")
        lines.append(instructions["note"] + "\n")
        lines.append("| proxy | transactions | instructions per transaction | malloc calls per transaction |")
        lines.append("| --- | ---: | ---: | ---: |")
        for proxy, r in instructions["rows"].items():
            if "error" in r:
                lines.append(f"| {proxy} | n/a | n/a | n/a ({r['error']}) |")
            else:
                lines.append(f"| {proxy} | {r['units']} | {r['ir_per_unit']:,.0f} | "
                             f"{r['mallocs_per_unit']:.2f} |")
        lines.append("")
    if idle:
        lines.append("## Idle clients\n")
        lines.append("Authenticated clients (md5, both proxies) held open and idle; RSS of the proxy process from /proc.\n")
        lines.append("| proxy | clients | failed | RSS before | RSS after | bytes per idle client | load | other CPU, % of one core |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for proxy, r in idle.items():
            lines.append(f"| {proxy} | {r['clients']} | {r['failed']} | {r['rss_before_kib']} KiB | "
                         f"{r['rss_after_kib']} KiB | {r['bytes_per_client']:.0f} | {machine_cells([r])} |")
        lines.append("")
    if storms:
        lines.append("## Connection storm\n")
        lines.append("All clients connect at once (md5), run `SELECT 1`, and leave; server connections sampled every 50 ms.\n")
        lines.append("| proxy | clients | served | failed | seconds until all served | peak server connections | errors | load | other CPU, % of one core |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
        for proxy, r in storms.items():
            lines.append(f"| {proxy} | {r['served'] + r['failed']} | {r['served']} | {r['failed']} | "
                         f"{r['seconds']} | {r['peak_server_connections']} | {json.dumps(r['errors'])[:120]} | "
                         f"{machine_cells([r])} |")
        lines.append("")
    if profile_note and os.path.exists(profile_note):
        with open(profile_note) as f:
            lines.append(f.read())
    # Sections written by other benchmarks (bench/sysbench.sh) are kept.
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        at = previous.find("## MySQL: sysbench")
        if at >= 0:
            lines.append(previous[at:].rstrip("\n"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def pg_version():
    out = subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout
    return out.strip().split()[-1] if out else "?"


def pgbouncer_version():
    out = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "PgBouncer"


def callgrind_section(pg, events):
    """Both proxies' user-space instructions per `pgbench -S -M simple` transaction."""
    rows = {}
    for target in ("pgbouncer", "poolguard"):
        try:
            rows[target] = callgrind.measure_pg(pg.port, target, events=events)
            log(f"callgrind {target}: {rows[target]}")
        except (SystemExit, Exception) as e:  # a failed measurement is reported, not fatal
            rows[target] = {"error": str(e)[:120]}
            log(f"callgrind {target} failed: {e}")
    note = ("User-space instructions per transaction under `valgrind --tool=callgrind` "
            f"(`bench/callgrind.py --door pg`): `pgbench -S -M simple`, 4 clients, {events // 4} "
            f"and {events} transactions after an 800-transaction warm-up, the difference of the two "
            "runs (so the clients' logins are not counted); poolguard with `--threads 1`. Unlike "
            "TPS and CPU time, these do not move with other work on the machine.")
    return {"note": note, "rows": rows}


def main():
    ap = argparse.ArgumentParser()
    # pgbench counts connection time inside -T: 500 SCRAM logins take seconds on 2 cores.
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--storm", type=int, default=5000)
    ap.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--profile-notes", default=os.path.join(ROOT, "bench", "PROFILE.md"))
    ap.add_argument("--callgrind", action="store_true",
                    help="add both proxies' instructions per transaction (bench/callgrind.py)")
    ap.add_argument("--callgrind-events", type=int, default=16000)
    args = ap.parse_args()

    pg = PgSandbox(max_connections=700)
    workdir = tempfile.mkdtemp(prefix="poolguard-bench-pgbench-")
    procs = []
    try:
        pg.pgbench_init(scale=10)
        proxies = {"tcp": (PgBouncer(pg.port), Poolguard(pg.port))}
        procs = list(proxies["tcp"])
        if pg.socket:
            proxies["unix"] = (PgBouncer(pg.port, socket=pg.socket),
                               Poolguard(pg.port, socket=pg.socket))
            procs += proxies["unix"]
        results = run_matrix(pg, proxies, args.duration, args.reps, workdir, args.only)
        for p in procs:
            p.stop()
        procs = []
        instructions = callgrind_section(pg, args.callgrind_events) if args.callgrind else None
        idle, storms = {}, {}
        if args.idle or args.storm:
            # One proxy at a time, so the server's connection count is that proxy's alone.
            for name, make in (("pgbouncer", PgBouncer), ("poolguard", Poolguard)):
                p = make(pg.port, auth="md5")
                procs = [p]
                if args.idle:
                    idle[name] = idle_footprint(pg, p.pid, p.port, args.idle)
                    log(f"idle {name}: {idle[name]}")
                if args.storm:
                    storms[name] = storm(pg, p.port, args.storm)
                    log(f"storm {name}: {storms[name]}")
                p.stop()
                procs = []
        write_results(args.out, results, idle, storms, args, args.profile_notes, instructions)
        log(f"wrote {args.out}")
    finally:
        for p in procs:
            p.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
