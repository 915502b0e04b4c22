#!/usr/bin/env bash
# Every check CI runs after setup: lint, format, types, then the test suite with line coverage of
# src/. Stops at the first check that fails. Run from anywhere, after `bash scripts/setup.sh`.
#   bash scripts/check.sh            # all of it
#   bash scripts/check.sh --fast     # lint, format and types only (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
[ -x "$bin/python" ] || { echo "check.sh: no .venv here; run: bash scripts/setup.sh" >&2; exit 2; }
echo "== ruff check (lint)"
"$bin/ruff" check src tests benchmarks
echo "== ruff format --check"
"$bin/ruff" format --check src tests benchmarks
echo "== mypy (src/)"
"$bin/mypy"
[ "${1:-}" = "--fast" ] && exit 0
echo "== pytest, with line coverage of src/"
# two workers (pytest-xdist), one torch thread each (tests/conftest.py): the tests are mostly
# small tensors, bound by Python rather than by arithmetic, so this takes ~40% less time on two cores
"$bin/python" -m pytest -q -n 2 --dist loadgroup --cov=sam2prune --cov-report=term --durations=20
