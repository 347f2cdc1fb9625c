"""Remote HPC for real: a one-node Slurm cluster behind sshd on 127.0.0.1 (``scripts/start_slurm_cluster.sh``).

The computer and codes are registered with the ``verdi`` commands of ``docs/user_guide/cluster.md``; the daemon
then runs a MACE committee job, a pacemaker fit and a ``PwBaseWorkChain`` through ``core.ssh`` + ``core.slurm``:
every CalcJob uploads its script and inputs over SFTP, is submitted with ``sbatch`` and gets a Slurm job id.

Without a cluster the test is skipped (with the reason); ``PYACEMAKER_REQUIRE_SLURM=1`` (set in CI) makes that a
failure instead, so that a broken cluster cannot pass silently.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk

from aiida_pyacemaker.data import LabelledStructuresData, StructureSetData

COMPUTER = "slurm-localhost"
SSH_KEY = pathlib.Path.home() / ".ssh" / "id_ed25519"
START_SCRIPT = "bash scripts/start_slurm_cluster.sh"


def cluster_problem() -> str | None:
    """Why this machine cannot run the test (no Slurm, node not idle, no passwordless ssh), else None."""
    for program in ("sbatch", "sinfo", "scontrol", "ssh"):
        if shutil.which(program) is None:
            return f"`{program}` is not installed"
    try:
        state = subprocess.run(
            ["sinfo", "-h", "-n", "localhost", "-o", "%T"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    except subprocess.TimeoutExpired:
        return "`sinfo` did not answer within 20 s (slurmctld not running?)"
    if state not in {"idle", "mixed", "allocated"}:
        return f"the Slurm node `localhost` is {state or 'unknown to sinfo'!r}, not idle"
    if not SSH_KEY.is_file():
        return f"no SSH key {SSH_KEY}"
    ssh = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "localhost", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if ssh.returncode != 0:
        return f"`ssh localhost` without a password failed: {ssh.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (or, with ``PYACEMAKER_REQUIRE_SLURM=1``, fail) unless the local Slurm cluster and sshd answer."""
    problem = cluster_problem()
    if problem is not None:
        message = f"no local Slurm cluster + sshd: {problem}. Start one with `{START_SCRIPT}` (CI does)."
        if os.environ.get("PYACEMAKER_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)


def verdi(profile: str, *args: str) -> str:
    """``verdi -p PROFILE ARGS`` as a user types it; the output, or a failure with it."""
    verdi_path = pathlib.Path(sys.executable).parent / "verdi"
    command = [str(verdi_path), "-p", profile, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def register_slurm_computer(profile: str, work_dir: pathlib.Path) -> orm.Computer:
    """The computer and the three codes, with the commands of ``docs/user_guide/cluster.md``."""
    from aiida.common.exceptions import NotExistent

    try:
        return orm.load_computer(COMPUTER)
    except NotExistent:
        pass
    username = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    verdi(
        profile,
        *("computer", "setup", "-n", "--label", COMPUTER, "--hostname", "localhost"),
        *("--transport", "core.ssh", "--scheduler", "core.slurm", "--work-dir", str(work_dir)),
        *("--mpirun-command", "srun -n {tot_num_mpiprocs}", "--mpiprocs-per-machine", "1"),
    )
    verdi(
        profile,
        *("computer", "configure", "core.ssh", COMPUTER, "-n", "--username", username),
        *("--key-filename", str(SSH_KEY), "--no-look-for-keys", "--no-allow-agent"),
        *("--key-policy", "AutoAddPolicy", "--safe-interval", "0"),
    )
    codes = [
        ("pw", shutil.which("pw.x") or "/usr/bin/pw.x", "quantumespresso.pw", "--with-mpi"),
        ("mace", sys.executable, "pyacemaker.mace", "--no-with-mpi"),
        ("pacemaker", sys.executable, "pyacemaker.pacemaker", "--no-with-mpi"),
    ]
    for label, executable, plugin, mpi in codes:
        verdi(
            profile,
            *("code", "create", "core.code.installed", "-n", "--label", label, "--computer", COMPUTER),
            *("--filepath-executable", executable, "--default-calc-job-plugin", plugin, mpi),
        )
    computer = orm.load_computer(COMPUTER)
    computer.set_minimum_job_poll_interval(1.0)  # new computers poll every 10 s at most
    return computer


def slurm_job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (slurm.conf keeps finished jobs for an hour: MinJobAge=3600)."""
    result = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"Slurm does not know job {job_id}: {result.stderr}"
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout))


def calcjobs(node: orm.ProcessNode) -> list[orm.CalcJobNode]:
    """Every CalcJob that ``node`` launched, at any depth."""
    assert isinstance(node, orm.WorkflowNode)
    return [child for child in node.called_descendants if isinstance(child, orm.CalcJobNode)]


@pytest.mark.slow
@pytest.mark.daemon
def test_mace_pacemaker_and_pw_through_ssh_and_slurm(
    slurm_cluster,
    aiida_profile,
    daemon_client,
    submit_and_await,
    tmp_path,
    tiny_committee,
    si_dft_set,
    pseudo_family,
    capsys,
):
    from aiida.engine import submit

    from aiida_pyacemaker.dft import get_pw_builder
    from aiida_pyacemaker.workflows.mace.base import MaceBaseWorkChain
    from aiida_pyacemaker.workflows.pacemaker.base import PacemakerBaseWorkChain

    computer = register_slurm_computer(aiida_profile.name, tmp_path / "aiida-slurm")
    output = verdi(aiida_profile.name, "computer", "test", COMPUTER)
    assert "Success" in output and "Failed" not in output, output
    # The worker reads the poll interval when it first talks to the computer: restart it cleanly.
    if daemon_client.is_daemon_running:
        daemon_client.stop_daemon(wait=True)
    daemon_client.start_daemon()

    rng = np.random.default_rng(0)
    cells = []
    for _ in range(3):
        atoms = bulk("Si", "diamond", a=5.43)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        cells.append(atoms)
    mace = MaceBaseWorkChain.get_builder_from_protocol(
        orm.load_code(f"mace@{COMPUTER}"), tiny_committee, StructureSetData.from_atoms(cells), protocol="fast"
    )
    training_set = LabelledStructuresData.from_atoms(si_dft_set[:20], source="dft")
    pacemaker = PacemakerBaseWorkChain.get_builder_from_protocol(
        orm.load_code(f"pacemaker@{COMPUTER}"),
        training_set,
        protocol="fast",
        overrides={"pacemaker": {"parameters": {"maxiter": 10}}},
    )
    pw = get_pw_builder(
        orm.load_code(f"pw@{COMPUTER}"),
        orm.StructureData(ase=cells[0]),
        pseudo_family.label,
        protocol="fast",
        stringency="low",
    )
    nodes = {"mace": submit(mace), "pacemaker": submit(pacemaker), "pw": submit(pw)}
    for name in nodes:
        nodes[name] = submit_and_await(nodes[name], timeout=900)

    lines = []
    for name, node in nodes.items():
        assert node.is_finished_ok, f"{name}: {node.exit_status} {node.exit_message}"
        jobs = calcjobs(node)
        assert jobs, f"{name} ran no CalcJob"
        for calc in jobs:
            assert calc.is_finished_ok, f"{name}: {calc.process_label} {calc.exit_status} {calc.exit_message}"
            assert calc.computer is not None and calc.computer.uuid == computer.uuid
            job_id = calc.get_job_id()
            assert job_id is not None and job_id.isdigit(), f"{calc.process_label}: job id {job_id!r}"
            script = calc.base.repository.get_object_content("_aiidasubmit.sh", "r")
            assert "#SBATCH" in script
            remote = calc.outputs.remote_folder
            assert remote.computer.uuid == computer.uuid
            assert pathlib.Path(remote.get_remote_path()).is_relative_to(tmp_path / "aiida-slurm")
            assert "_aiidasubmit.sh" in remote.listdir()  # over SFTP
            slurm = slurm_job(job_id)
            assert slurm["JobState"] == "COMPLETED", slurm
            assert slurm["NodeList"] == "localhost"
            assert pathlib.Path(slurm["WorkDir"]) == pathlib.Path(remote.get_remote_path())
            lines.append(f"slurm job {job_id}: {name} {calc.process_label} pk={calc.pk} on {computer.label}")

    pw_script = calcjobs(nodes["pw"])[0].base.repository.get_object_content("_aiidasubmit.sh", "r")
    # pw.x runs as an MPI step of the job (Slurm's pmix plugin).
    assert re.search(r"^srun -n 1 \S*pw\.x ", pw_script.replace("'", ""), re.MULTILINE), pw_script
    assert nodes["mace"].outputs.results.status_counts == {"ok": 3}
    assert nodes["pacemaker"].outputs.potential.elements == ["Si"]
    assert 1 <= nodes["pacemaker"].outputs.metrics["iterations"] <= 10
    assert nodes["pw"].outputs.output_parameters["energy"] < 0
    with capsys.disabled():
        print("\n" + "\n".join(lines))
