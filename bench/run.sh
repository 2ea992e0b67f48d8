#!/bin/sh
# Runs every benchmark (see bench/README.md) and writes bench/results/latest.md.
# Loopback only; every server and agent it starts is stopped at the end.
# Environment knobs: see the top of each bench_*.py (BENCH_*).
set -e
cd "$(dirname "$0")"
PY=${PYTHON:-/usr/bin/python3}
export KEYDRIFT_BIN="${KEYDRIFT_BIN:-$(cd .. && pwd)/keydrift}"
command -v wrk >/dev/null || { echo "bench: wrk is missing (make deps)"; exit 2; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (make deps)"; exit 2; }
mkdir -p results
start=$(date +%s)
for b in compare detect lag cost metrics; do
    echo "== $b"
    t0=$(date +%s)
    $PY bench_$b.py
    echo "($b: $(( $(date +%s) - t0 )) s)"
done
echo "== lag, heartbeat-interval 100ms"
BENCH_LAG_HEARTBEAT=100ms $PY bench_lag.py
total=$(( $(date +%s) - start ))
{
    echo "# keydrift benchmarks"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C .. rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), redis $(redis-server --version | sed "s/.*v=\([^ ]*\).*/\1/"), total ${total} s"
    echo
    for f in compare detect lag lag-100ms cost metrics; do cat results/$f.md; done
} > results/latest.md
echo "bench: total ${total} s; results in bench/results/latest.md"
