#!/usr/bin/env bash
# jobcast's benchmark suite (issue 7). Usage: bash bench/run.sh [--quick] [--only W1,W3] ...
# Installs the pinned Node packages (npm ci from bench/package-lock.json into bench/node_modules),
# then runs `python -m bench` (or $BENCH_MODULE, e.g. bench.soak) from the project's venv.
# See bench/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${BENCH_PYTHON:-$root/.venv/bin/python}"

command -v node >/dev/null || { echo "error: node (>= 18) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "error: npm is required" >&2; exit 1; }
[[ -x "$python" ]] || { echo "error: $python not found: run 'make venv' first" >&2; exit 1; }

# thousands of sockets in one process
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ "${BENCH_SKIP_NPM:-0}" != 1 ]]; then
  echo "[bench] npm ci (bench/package-lock.json)" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

cd "$root"
# BENCH_MODULE=bench.soak: the soak (make soak), with the same setup
exec "$python" -m "${BENCH_MODULE:-bench}" "$@"
