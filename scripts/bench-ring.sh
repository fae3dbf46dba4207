#!/usr/bin/env bash
# Chord ring benchmark in the deterministic simulator: N = 100, 1,000, 10,000.
# Prints a table, rewrites the "## Ring (simulator)" section of
# docs/BENCHMARKS.md and draws docs/ring-hops.svg. Extra arguments go to
# ring-sim (see `ring-sim --help`), e.g. `scripts/bench-ring.sh --nodes 100,1000`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p p2psip --bin ring-sim

cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
machine="$(nproc) CPUs available (nproc), ${cpu:-unknown CPU} (lscpu), $(uname -sr), $(rustc --version)"

./target/release/ring-sim \
    --markdown docs/BENCHMARKS.md \
    --svg docs/ring-hops.svg \
    --machine "$machine" \
    --command "scripts/bench-ring.sh $*" \
    "$@"
