"""An aiida-pseudo family with cutoffs, built offline from Debian's ``quantum-espresso-data`` UPF files."""

from __future__ import annotations

import math
import pathlib
import re
import shutil
import tempfile

from .quantum_espresso import SetupError
from .result import StepResult

DEFAULT_FAMILY = "pyacemaker/debian-qe/PBE"
DEBIAN_PSEUDO_DIR = pathlib.Path("/usr/share/espresso/pseudo")

#: One scalar-relativistic PBE pseudopotential per element, from the files Debian ships.
DEBIAN_PBE_FILES: dict[str, str] = {
    "B": "B.pbe-n-kjpaw_psl.1.0.0.UPF",
    "C": "C.pbe-n-kjpaw_psl.0.1.UPF",
    "Cr": "Cr.pbe-spn-kjpaw_psl.1.0.0.UPF",
    "Cu": "Cu.pbe-kjpaw.UPF",
    "Fe": "Fe.pbe-spn-rrkjus_psl.0.2.1.UPF",
    "Ge": "Ge.pbe-kjpaw.UPF",
    "H": "H.pbe-kjpaw.UPF",
    "I": "I.pbe-n-kjpaw_psl.1.0.0.UPF",
    "N": "N.pbe-n-kjpaw_psl.1.0.0.UPF",
    "Ni": "Ni.pbe-spn-kjpaw_psl.1.0.0.UPF",
    "O": "O.pbe-kjpaw.UPF",
    "Si": "Si.pbe-nl-rrkjus_psl.1.0.0.UPF",
}

#: Cutoffs (Ry) used when a file carries no suggestion; ultrasoft/PAW files want ecutrho = 8 x ecutwfc.
FALLBACK_ECUTWFC = 40.0
DUAL = 8.0
#: The ``low`` stringency: cheap, for tests and quick looks, not for production labels.
LOW_ECUTWFC = 30.0

_SUGGESTED = re.compile(r"Suggested minimum cutoff for (wavefunctions|charge density):\s*([0-9.]+)")


def suggested_cutoffs(upf: pathlib.Path) -> tuple[float, float]:
    """Return (ecutwfc, ecutrho) in Ry: the file's suggestion rounded up to 5 Ry, or the fallback."""
    found = dict(_SUGGESTED.findall(upf.read_text(errors="replace")[:20000]))
    wfc = float(found.get("wavefunctions", 0) or 0)
    rho = float(found.get("charge density", 0) or 0)
    wfc = math.ceil(wfc / 5) * 5 if wfc > 0 else FALLBACK_ECUTWFC
    return wfc, max(rho, DUAL * wfc)


def family_cutoffs(pseudo_dir: pathlib.Path) -> dict[str, dict[str, dict[str, float]]]:
    """The ``normal`` (file suggestions) and ``low`` stringencies for every element of the family."""
    normal, low = {}, {}
    for element, filename in DEBIAN_PBE_FILES.items():
        wfc, rho = suggested_cutoffs(pseudo_dir / filename)
        normal[element] = {"cutoff_wfc": wfc, "cutoff_rho": rho}
        low_wfc = min(wfc, LOW_ECUTWFC)
        low[element] = {"cutoff_wfc": low_wfc, "cutoff_rho": DUAL * low_wfc}
    return {"normal": normal, "low": low}


def ensure_pseudo_family(label: str = DEFAULT_FAMILY, pseudo_dir: pathlib.Path = DEBIAN_PSEUDO_DIR) -> StepResult:
    """Install the family ``label`` from ``pseudo_dir`` unless it exists already."""
    from aiida import orm
    from aiida_pseudo.data.pseudo import UpfData
    from aiida_pseudo.groups.family import CutoffsPseudoPotentialFamily

    existing = orm.QueryBuilder().append(CutoffsPseudoPotentialFamily, filters={"label": label}).first()
    if existing:
        family = existing[0]
        return StepResult("pseudo family", False, f"`{label}` ({len(family.nodes)} pseudos)")

    missing = [name for name in DEBIAN_PBE_FILES.values() if not (pseudo_dir / name).is_file()]
    if missing:
        raise SetupError(
            f"pseudopotentials missing in {pseudo_dir}: {', '.join(missing)}. "
            "Install Debian's `quantum-espresso-data` package."
        )
    with tempfile.TemporaryDirectory() as tmp:
        for name in DEBIAN_PBE_FILES.values():
            shutil.copy(pseudo_dir / name, tmp)
        family = CutoffsPseudoPotentialFamily.create_from_folder(
            pathlib.Path(tmp),
            label,
            description=f"PBE pseudopotentials from Debian's quantum-espresso-data ({pseudo_dir})",
            pseudo_type=UpfData,
        )
    for stringency, cutoffs in family_cutoffs(pseudo_dir).items():
        family.set_cutoffs(cutoffs, stringency, unit="Ry")
    family.set_default_stringency("normal")
    return StepResult("pseudo family", True, f"`{label}` ({len(family.nodes)} pseudos, stringencies normal/low)")
