#!/usr/bin/env bash
# Prepares both polyglot examples from the pinned dependency files and generates their code from
# proto/ (nothing generated is committed). Safe to run again: it reinstalls only what changed.
#   examples/python: .venv/ from requirements.txt, then gen/ by generate.py (grpcio-tools)
#   examples/node:   node_modules/ by `npm ci` from package-lock.json, then gen/ by buf generate
set -euo pipefail
cd "$(dirname "$0")"

echo "==> examples/python: virtualenv from requirements.txt"
python3 -m venv python/.venv
# Exactly the pins, nothing resolved behind them; pip check fails if one is missing.
python/.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r python/requirements.txt
python/.venv/bin/pip check --disable-pip-version-check
python/.venv/bin/python python/generate.py

echo "==> examples/node: npm ci from package-lock.json"
(cd node && npm ci --no-audit --no-fund --loglevel=error && npm run --silent generate)
echo "generated $(find node/gen -name '*_pb.js' | wc -l) modules into examples/node/gen"
