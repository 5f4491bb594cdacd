#!/usr/bin/env bash
# A bare byte relay over epoll and over io_uring beside PgBouncer and poolguard: the floor under
# a proxy's CPU per transaction. Options go to bench/relay.py (--duration S, --reps N,
# --clients N repeatable, --out FILE); writes bench/RELAY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
cargo build --release --quiet -p poolguard
cargo build --release --quiet --manifest-path bench/relay/Cargo.toml
exec python3 bench/relay.py "$@"
