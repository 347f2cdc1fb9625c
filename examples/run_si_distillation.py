"""Main job: distil one foundation-class MACE model and a few real pw.x calculations into an ACE potential.

Submits ``DistillationWorkChain`` (protocol ``fast``, campaign file ``examples/si_distillation.yaml``) to the
daemon of the profile that ``aiida-pyacemaker setup`` made, waits, prints what the loop did (DFT calls, labels
by tier, the test RMSE, the potential's pk and files) and writes the plots. The same as
``aiida-pyacemaker distil examples/si_distillation.yaml --wait``.

Usage: python examples/run_si_distillation.py [--profile pyacemaker] [--plots distillation-plots]
"""

from __future__ import annotations

import argparse
import pathlib

from aiida_pyacemaker.cli.distil import launch

CAMPAIGN_FILE = pathlib.Path(__file__).resolve().parent / "si_distillation.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="pyacemaker")
    parser.add_argument("--campaign-file", default=str(CAMPAIGN_FILE))
    parser.add_argument("--plots", default="distillation-plots", help="Folder for the PNG plots and potential files.")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    launch(args.campaign_file, args.profile, wait=True, plots=args.plots, timeout=args.timeout)


if __name__ == "__main__":
    main()
