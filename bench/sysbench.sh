#!/usr/bin/env bash
# sysbench oltp_read_only / oltp_read_write, direct MariaDB vs poolguard's MySQL front door;
# writes the "## MySQL: sysbench" section of bench/RESULTS.md (the sections above are untouched).
# Options go to bench/sysbench.py (--duration S, --reps N, --pool N, --no-write).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p poolguard
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/sysbench.py "$@"
