#!/usr/bin/env bash
# poolguard vs PgBouncer vs direct PostgreSQL, in one run; writes bench/RESULTS.md.
# Options go to bench/pgbench.py (--duration S, --reps N, --idle N, --storm N, --only NAME,
# --callgrind: add both proxies' instructions per transaction from bench/callgrind.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
cargo build --release --quiet -p poolguard
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/pgbench.py "$@"
