#!/usr/bin/env bash
# sysbench oltp_point_select / oltp_read_only at 16, 64, 256 threads, direct MariaDB vs poolguard's
# MySQL front door, with proxy CPU per statement and bytes per idle client;
# writes the "## MySQL: sysbench" section of bench/RESULTS.md (the sections above are untouched).
# Options go to bench/sysbench.py (--duration S, --reps N, --pool N, --threads, --workloads,
# --idle N, --no-write).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p poolguard
# 10,000 idle clients take two descriptors each in poolguard (the socket and the copy KILL_CLIENT
# shuts down): as root, raise the hard limit too, as the systemd units do (LimitNOFILE=65536).
ulimit -Hn 65536 2>/dev/null || true  # where allowed (not in every container)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/sysbench.py "$@"
