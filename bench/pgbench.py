"""poolguard vs PgBouncer vs direct PostgreSQL, measured in one run on this machine.

Starts a sandbox PostgreSQL (poolguard sandbox), Debian's PgBouncer and poolguard (release
build), both proxies in transaction mode with a pool of 20, and runs pgbench scenarios
interleaved (direct, PgBouncer, poolguard, then again) and repeated. Records TPS, mean and p99
latency (from pgbench's per-transaction log), failures, and each proxy's CPU time per
transaction (utime+stime from /proc over the run). Then measures RSS with N idle authenticated
clients and a storm of M clients connecting at once. Writes bench/RESULTS.md.

Usage: bench/pgbench.sh [--duration 10] [--reps 2] [--idle 10000] [--storm 5000] [--quick]
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import cpu_seconds, free_port, idle_footprint as idle_clients_footprint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOLGUARD = os.path.join(ROOT, "target", "release", "poolguard")
USER, PASSWORD, DB = "app", "app-secret", "bank"
POOL = 20
LOADS = []  # 1-minute load average after each run: other work on the machine shows here


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_port(port, timeout=30):
    import socket
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Sandbox:
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
        self.port = int(self.info["PORT"])
        self.su_password = self.info["SUPERUSER_PASSWORD"]

    def sql(self, sql):
        env = dict(os.environ, PGPASSWORD=self.su_password)
        return subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", "postgres", "-c", sql],
                              env=env, capture_output=True, text=True).stdout.strip()

    def app_connections(self):
        out = self.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
        return int(out) if out.isdigit() else 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


class PgBouncer:
    def __init__(self, backend_port, auth="scram-sha-256"):
        self.dir = tempfile.mkdtemp(prefix="poolguard-bench-pgbouncer-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            f.write(f'"{USER}" "{PASSWORD}"\n')
        with open(os.path.join(self.dir, "pgbouncer.ini"), "w") as f:
            f.write(f"""[databases]
{DB} = host=127.0.0.1 port={backend_port} dbname={DB}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = {auth}
auth_file = {self.dir}/userlist.txt
pool_mode = transaction
default_pool_size = {POOL}
max_client_conn = 20000
max_db_connections = {POOL}
logfile = {self.dir}/pgbouncer.log
pidfile =
server_reset_query =
""")
        for name in os.listdir(self.dir):
            os.chmod(os.path.join(self.dir, name), 0o644)
        cmd = ["pgbouncer", os.path.join(self.dir, "pgbouncer.ini")]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; its log must be writable by the account it uses.
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            cmd = ["pgbouncer", "-u", "postgres", os.path.join(self.dir, "pgbouncer.ini")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.pid = self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Poolguard:
    def __init__(self, backend_port, auth="scram-sha-256"):
        self.dir = tempfile.mkdtemp(prefix="poolguard-bench-")
        self.port = free_port()
        cfg = os.path.join(self.dir, "poolguard.toml")
        with open(cfg, "w") as f:
            f.write(f"""[postgres]
listen = "127.0.0.1:{self.port}"
auth_method = "{auth}"
[[backends]]
name = "pg"
protocol = "postgres"
hosts = ["127.0.0.1:{backend_port}"]
max_connections = {POOL}
[[databases]]
name = "{DB}"
backend = "pg"
pool_mode = "transaction"
pool_size = {POOL}
[[users]]
name = "{USER}"
password = "{PASSWORD}"
[limits]
max_client_connections = 20000
acquire_timeout = "60s"
""")
        self.proc = subprocess.Popen([POOLGUARD, "run", "--config", cfg],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "log"), "w"),
                                     env=dict(os.environ, RUST_LOG="warn"))
        wait_port(self.port)
        self.pid = self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def pgbench(port, args, clients, duration, workdir):
    for f in glob.glob(os.path.join(workdir, "pgbench_log.*")):
        os.remove(f)
    jobs = min(2, clients)
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-n",
           "-c", str(clients), "-j", str(jobs), "-T", str(duration), "-l", *args, DB]
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
]


def run_matrix(pg, bouncer, guard, duration, reps, workdir, only=None):
    ports = {"direct": pg.port, "pgbouncer": bouncer.port, "poolguard": guard.port}
    pids = {"pgbouncer": bouncer.pid, "poolguard": guard.pid}
    results = {}
    for rep in range(reps):
        for name, args, clients, targets in SCENARIOS:
            if only and name not in only:
                continue
            for target in targets:
                before = cpu_seconds(pids[target]) if target in pids else 0
                r = pgbench(ports[target], args, clients, duration, workdir)
                LOADS.append(os.getloadavg()[0])
                if target in pids:
                    used = cpu_seconds(pids[target]) - before
                    r["cpu_us_per_tx"] = used * 1e6 / r["transactions"] if r["transactions"] else 0
                log(f"rep {rep + 1} {name:22} {target:9} tps {r['tps']:9.0f}  p99 {r['p99_ms']:7.2f} ms"
                    f"  failed {r['failed']}  cpu/tx {r.get('cpu_us_per_tx', 0):6.1f} us {r['error']}")
                results.setdefault((name, target), []).append(r)
    return results


def idle_footprint(pid, port, n):
    return idle_clients_footprint(pid, "pgclients.py",
                                  ["idle", str(port), USER, PASSWORD, DB, str(n)], n)


def storm(pg, port, n):
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], pg.app_connections())
            time.sleep(0.05)

    t = threading.Thread(target=sample)
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
    return r


def median(rs, key):
    return statistics.median(r.get(key, 0) for r in rs)


def write_results(path, results, idle, storms, args, profile_note):
    def cell(name, target, key, fmt):
        rs = results.get((name, target))
        return fmt.format(median(rs, key)) if rs else "n/a"

    lines = []
    lines.append("# Benchmark results\n")
    lines.append(f"Measured by `bench/pgbench.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
                 f"{os.cpu_count()} cores; pgbench, PostgreSQL ({pg_version()}), and the proxies share them. "
                 f"Pool of {POOL} in both proxies (transaction mode), {args.duration} s per run, "
                 f"{args.reps} interleaved repetitions (direct, PgBouncer, poolguard, then again); "
                 "medians shown. PgBouncer: Debian's " + pgbouncer_version() + ". "
                 "Latency from pgbench's per-transaction log (`-l`). "
                 + (f"Load average during the runs: {min(LOADS):.1f} to {max(LOADS):.1f} "
                    "(it counts the benchmark's own pgbench threads and PostgreSQL backends, up to "
                    "500 of them, so it says little about other work; see the note below the table "
                    "for what else ran).\n" if LOADS else "\n"))
    lines.append("| scenario | target | TPS | mean ms | p99 ms | failed | proxy CPU µs/tx | vs direct | vs PgBouncer |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
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
            cpu = f"{median(rs, 'cpu_us_per_tx'):.1f}" if target != "direct" else ""
            failed = max(r["failed"] for r in rs)
            lines.append(f"| {name} | {target} | {tps:.0f} | {median(rs, 'mean_ms'):.2f} | "
                         f"{median(rs, 'p99_ms'):.2f} | {failed} | {cpu} | {vs_d} | {vs_b} |")
    lines.append("")
    lines.append("CPU per transaction ratio (poolguard / PgBouncer): " + ", ".join(
        f"{name}: {median(results[(name, 'poolguard')], 'cpu_us_per_tx') / median(results[(name, 'pgbouncer')], 'cpu_us_per_tx'):.2f}x"
        for name, _, _, targets in SCENARIOS
        if (name, "poolguard") in results and (name, "pgbouncer") in results
        and median(results[(name, "pgbouncer")], "cpu_us_per_tx") > 0) + "\n")
    if idle:
        lines.append("## Idle clients\n")
        lines.append("Authenticated clients (md5, both proxies) held open and idle; RSS of the proxy process from /proc.\n")
        lines.append("| proxy | clients | failed | RSS before | RSS after | bytes per idle client |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for proxy, r in idle.items():
            lines.append(f"| {proxy} | {r['clients']} | {r['failed']} | {r['rss_before_kib']} KiB | "
                         f"{r['rss_after_kib']} KiB | {r['bytes_per_client']:.0f} |")
        lines.append("")
    if storms:
        lines.append("## Connection storm\n")
        lines.append("All clients connect at once (md5), run `SELECT 1`, and leave; server connections sampled every 50 ms.\n")
        lines.append("| proxy | clients | served | failed | seconds until all served | peak server connections | errors |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for proxy, r in storms.items():
            lines.append(f"| {proxy} | {r['served'] + r['failed']} | {r['served']} | {r['failed']} | "
                         f"{r['seconds']} | {r['peak_server_connections']} | {json.dumps(r['errors'])[:120]} |")
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
    args = ap.parse_args()

    pg = Sandbox(max_connections=700)
    workdir = tempfile.mkdtemp(prefix="poolguard-bench-pgbench-")
    procs = []
    try:
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", "-h", "127.0.0.1", "-p", str(pg.port),
                        "-U", USER, DB], env=env, check=True, capture_output=True)
        bouncer, guard = PgBouncer(pg.port), Poolguard(pg.port)
        procs = [bouncer, guard]
        results = run_matrix(pg, bouncer, guard, args.duration, args.reps, workdir, args.only)
        for p in procs:
            p.stop()
        procs = []
        idle, storms = {}, {}
        if args.idle or args.storm:
            # One proxy at a time, so the server's connection count is that proxy's alone.
            for name, make in (("pgbouncer", PgBouncer), ("poolguard", Poolguard)):
                p = make(pg.port, auth="md5")
                procs = [p]
                if args.idle:
                    idle[name] = idle_footprint(p.pid, p.port, args.idle)
                    log(f"idle {name}: {idle[name]}")
                if args.storm:
                    storms[name] = storm(pg, p.port, args.storm)
                    log(f"storm {name}: {storms[name]}")
                p.stop()
                procs = []
        write_results(args.out, results, idle, storms, args, args.profile_notes)
        log(f"wrote {args.out}")
    finally:
        for p in procs:
            p.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
