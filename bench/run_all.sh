#!/usr/bin/env bash
# Runs every benchmark of ztproxy, one after the other; results land in bench/results/.
#   bench/run_all.sh            # micro-benchmarks, then the proxy suite (about 4 minutes)
#   bench/run_all.sh --quick    # the same, short (the proxy suite in --quick mode)
# Extra arguments go to bench_proxy.py (for example --workers 1,2).
# A missing micro-benchmark script is skipped with a note; the first failure stops the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
mkdir -p bench/results
for micro in bench_tokens bench_policy bench_audit; do
    if [ -f "bench/$micro.py" ]; then
        echo "== $micro"
        timeout 600 "$PY" "bench/$micro.py"
    else
        echo "== $micro: bench/$micro.py not present, skipped"
    fi
done
echo "== bench_proxy $*"
timeout 1200 "$PY" bench/bench_proxy.py "$@"
