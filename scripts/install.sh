#!/usr/bin/env bash
# Install everything aiida-pyacemaker needs on a Debian/Ubuntu machine (root, or sudo available), into a virtual
# environment (PEP 668: Debian's own Python refuses a system-wide pip install).
# Idempotent: what is already installed is left alone.
# Usage: bash scripts/install.sh [--no-tensorpot] [--venv DIR]
#   --venv DIR     where the virtual environment lives (default: $PYACEMAKER_VENV, else .venv in the repository)
#   PYTHON=...     the interpreter that creates it (default: /usr/bin/python3, Debian's own, when it exists)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
with_tensorpot=1
venv="${PYACEMAKER_VENV:-$PWD/.venv}"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-tensorpot) with_tensorpot=0 ;;
        --venv) venv="$2"; shift ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi

apt_packages=()
command -v pw.x >/dev/null || apt_packages+=(quantum-espresso quantum-espresso-data libopenblas0-serial)
[ -d /usr/share/espresso/pseudo ] || apt_packages+=(quantum-espresso-data)
command -v locale-gen >/dev/null || apt_packages+=(locales)
# Debian splits venv/ensurepip out of its Python.
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv)
"$PYTHON" -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    2>/dev/null || apt_packages+=(python3-dev)
if [ ${#apt_packages[@]} -gt 0 ]; then
    echo "== apt-get install ${apt_packages[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

# PostgreSQL creates AiiDA databases with the en_US.UTF-8 locale (production profile only).
if ! locale -a 2>/dev/null | grep -qi '^en_US.utf8$'; then
    echo "== generating the en_US.UTF-8 locale"
    $SUDO sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    $SUDO locale-gen >/dev/null
    # A running PostgreSQL only sees the new locale after a restart.
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        for version in $(ls /etc/postgresql); do
            $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main restart || true
        done
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the virtual environment $venv with $PYTHON ($("$PYTHON" --version))"
    "$PYTHON" -m venv "$venv"
fi
PY="$venv/bin/python"
PIP="$PY -m pip"

# torch first, pinned to the CPU build that is available offline here (a bare `torch` pulls CUDA wheels).
"$PY" -c "import torch" 2>/dev/null || { echo "== pip install torch (CPU)"; $PIP install -q "torch==2.13.0"; }

if [ "$with_tensorpot" = "1" ] && ! "$PY" -c "import tensorpotential" 2>/dev/null; then
    echo "== pip install the tensorpot backend of pacemaker"
    $PIP install -q "tensorflow==2.20.0" tf_keras matscipy sympy "pandas<3" scikit-learn scipy
    # tensorpotential declares tensorflow[and-cuda]: install it without its dependencies.
    $PIP install -q --no-deps "tensorpotential==0.6.2.1"
fi

echo "== pip install -e .[dev]"
$PIP install -q -e ".[dev]" "numpy<2.4"
"$PY" -c "import aiida_pyacemaker, mace, pyace, aiida_quantumespresso" \
    || { echo "install incomplete: an import failed" >&2; exit 1; }
echo "== install complete: $("$PY" --version) in $venv (activate with: source $venv/bin/activate)"
