#!/usr/bin/env bash
# One command from a bare Debian machine to a finished job: install, set up AiiDA, run the main job on the daemon.
# Usage: bash scripts/quickstart.sh [--profile NAME]   (default profile: pyacemaker)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="pyacemaker"
if [ "${1:-}" = "--profile" ]; then profile="$2"; fi
bash scripts/install.sh
# Everything runs from the virtual environment install.sh made; `aiida-pyacemaker setup` registers its Python.
venv="${PYACEMAKER_VENV:-$PWD/.venv}"
# shellcheck disable=SC1091
source "$venv/bin/activate"
aiida-pyacemaker setup --profile "$profile"
python examples/run_si_distillation.py --profile "$profile"
