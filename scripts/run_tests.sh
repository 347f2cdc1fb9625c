#!/usr/bin/env bash
# The test suite: lint (ruff), types (mypy), the Sphinx docs, then pytest (slow tests included; pass -m "not slow" for a quick run).
# Usage: bash scripts/run_tests.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 AIIDA_WARN_v3=0
# The virtual environment that scripts/install.sh made (PYACEMAKER_VENV, else .venv in the repository).
venv="${PYACEMAKER_VENV:-$PWD/.venv}"
if [ -x "$venv/bin/python" ]; then
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
fi
echo "== ruff"
python -m ruff check aiida_pyacemaker tests examples benchmarks scripts
python -m ruff format --check aiida_pyacemaker tests examples benchmarks scripts
echo "== mypy"
python -m mypy
echo "== docs (Sphinx, warnings are errors)"
python -m sphinx -b html -q -W --keep-going docs docs/_build/html
echo "== pytest"
# pytest exits 5 when it collects no test: that is a failure here too.
python -m pytest "$@"
