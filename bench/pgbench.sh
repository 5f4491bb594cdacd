#!/usr/bin/env bash
# poolguard vs PgBouncer vs direct PostgreSQL, in one run; writes bench/RESULTS.md.
# Options go to bench/pgbench.py (--duration S, --reps N, --idle N, --storm N, --only NAME,
# --callgrind: add both proxies' instructions per transaction from bench/callgrind.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
cargo build --release --quiet -p poolguard
# 10,000 idle clients take two descriptors each in poolguard (the socket and the copy KILL_CLIENT
# shuts down): as root, raise the hard limit too, as the systemd units do (LimitNOFILE=65536).
ulimit -Hn 65536 2>/dev/null || true  # where allowed (not in every container)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/pgbench.py "$@"
