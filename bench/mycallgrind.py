"""User-space instructions per statement of poolguard's MySQL front door, with callgrind.

Usage: mycallgrind.py [--events N] [--warmup N] [--threads N] [--workload oltp_point_select]
                      [--out FILE] [--mode transaction] [--strace] [--bin PATH]

Starts a sandbox MariaDB, prepares sysbench's tables, runs `poolguard --threads 1 run` under
`valgrind --tool=callgrind` (transaction mode, pool of 16), warms up with --warmup sysbench
events, zeroes the counters (callgrind_control -z), runs --events events (`--time=0`, so a fixed
amount of work), dumps the counters (callgrind_control -d) and prints instructions and malloc
calls per statement (sysbench's "queries: total"). Instruction counts do not depend on what else
the machine runs, unlike TPS or CPU time: this is the measure bench/PROFILE.md's tables use.
The dump is kept (--out) for `callgrind_annotate`. With --strace, poolguard runs under
`strace -c -f` instead and the system calls per statement are printed (warm-up included).
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

from benchlib import (POOLGUARD as BIN, free_port, mysql_config, start_mariadb_sandbox,
                      wait_listening)

TABLES, TABLE_SIZE = 4, 10000

ap = argparse.ArgumentParser()
ap.add_argument("--events", type=int, default=20000)
ap.add_argument("--warmup", type=int, default=2000)
ap.add_argument("--threads", type=int, default=4)
ap.add_argument("--workload", default="oltp_point_select")
ap.add_argument("--mode", default="transaction")
ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "poolguard-mysql.callgrind"))
ap.add_argument("--strace", action="store_true")
ap.add_argument("--bin", default=BIN, help="the poolguard binary to measure (e.g. an older build)")
args = ap.parse_args()


def sysbench(port, extra):
    cmd = ["sysbench", args.workload, "--db-driver=mysql", "--mysql-host=127.0.0.1",
           f"--mysql-port={port}", "--mysql-user=app", "--mysql-password=app-secret",
           "--mysql-db=bank", f"--tables={TABLES}", f"--table-size={TABLE_SIZE}"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
    return out.stdout


def start_poolguard(db_port, work):
    port = free_port()
    cfg = os.path.join(work, "poolguard.toml")
    mysql_config(cfg, port, db_port, 16, 20, args.mode, 'acquire_timeout = "60s"')
    base = os.path.join(work, "cg.out")
    log = open(os.path.join(work, "poolguard.log"), "w")
    tool = (["strace", "-c", "-f", "-o", base] if args.strace else
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={base}"])
    p = subprocess.Popen(
        tool + [args.bin, "--threads", "1", "run", "--config", cfg],
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    wait_listening(p, port, 300, "poolguard (see " + log.name + ")")
    return p, port, base


def totals(path):
    """Instructions and malloc calls recorded in one callgrind dump."""
    ir, mallocs = 0, 0
    names, fn, cfn = {}, None, None
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                ir = int(line.split()[1])
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3).strip()
                name = names.get(m.group(2), "")
                if m.group(1) == "fn":
                    fn = name
                else:
                    cfn = name
                continue
            if line.startswith("calls=") and cfn == "malloc":
                mallocs += int(line[6:].split()[0])
    return ir, mallocs


def main():
    sandbox, db_port = start_mariadb_sandbox(100)
    work = tempfile.mkdtemp(prefix="pg-mycallgrind-")
    pg = None
    try:
        sysbench(db_port, ["--threads=4", "prepare"])
        pg, port, base = start_poolguard(db_port, work)
        common = [f"--threads={args.threads}", "--time=0"]
        if args.strace:
            report = sysbench(port, common + [f"--events={args.events}", "run"])
            queries = int(re.search(r"queries:\s+(\d+)", report).group(1))
            # SIGTERM to poolguard itself (strace would die of it and leave poolguard behind).
            with open(f"/proc/{pg.pid}/task/{pg.pid}/children") as f:
                child = int(f.read().split()[0])
            os.kill(child, signal.SIGTERM)
            pg.wait(timeout=120)
            pg = None
            print(f"{args.workload} {args.mode}: {queries} statements; system calls per statement:")
            with open(base) as f:
                for line in f:
                    cols = line.split()
                    if len(cols) >= 5 and cols[3].isdigit() and cols[-1] != "total":
                        print(f"  {cols[-1]:16} {int(cols[3]) / queries:.3f}")
            return
        sysbench(port, common + [f"--events={args.warmup}", "run"])
        subprocess.run(["callgrind_control", "-z", str(pg.pid)], check=True,
                       capture_output=True)
        report = sysbench(port, common + [f"--events={args.events}", "run"])
        subprocess.run(["callgrind_control", "-d", str(pg.pid)], check=True,
                       capture_output=True)
        queries = int(re.search(r"queries:\s+(\d+)", report).group(1))
        dumps = sorted(glob.glob(base + ".*"), key=os.path.getmtime)
        if not dumps:
            raise SystemExit("no callgrind dump")
        shutil.copy(dumps[-1], args.out)
        ir, mallocs = totals(args.out)
        print(f"{args.workload} {args.mode}: {queries} statements, {ir} instructions, "
              f"{ir / queries:.0f} per statement, {mallocs / queries:.2f} malloc calls per "
              f"statement (dump: {args.out})")
    finally:
        if pg is not None:
            pg.send_signal(signal.SIGTERM)
            try:
                pg.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pg.kill()
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
