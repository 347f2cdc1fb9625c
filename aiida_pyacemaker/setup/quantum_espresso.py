"""Make sure the Quantum ESPRESSO executables are available."""

from __future__ import annotations

import os
import shutil
import subprocess

from .result import StepResult

APT_PACKAGES = ("quantum-espresso", "quantum-espresso-data")


class SetupError(RuntimeError):
    """Raised when a set-up step cannot be completed; the message says what to do."""


def ensure_quantum_espresso(executable: str = "pw.x", install: bool = True) -> StepResult:
    """Return where ``pw.x`` lives, installing Debian's ``quantum-espresso`` through apt when it is missing."""
    found = shutil.which(executable)
    if found:
        return StepResult("quantum-espresso", False, found)
    if not install:
        raise SetupError(f"`{executable}` is not on PATH and installation was disabled.")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SetupError(
            f"`{executable}` is not on PATH. Install Quantum ESPRESSO (Debian/Ubuntu: "
            f"`sudo apt-get install {' '.join(APT_PACKAGES)}`; conda: `conda install -c conda-forge qe`) "
            "and run the setup again."
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env)
    found = shutil.which(executable)
    if not found:
        raise SetupError(f"apt installed {APT_PACKAGES} but `{executable}` is still not on PATH.")
    return StepResult("quantum-espresso", True, f"installed with apt: {found}")
