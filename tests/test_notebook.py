"""The tutorial notebook runs from top to bottom (a small real loop and its provenance queries)."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "tutorial_provenance.ipynb"


@pytest.mark.slow
def test_tutorial_notebook_executes(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The notebook makes its own throw-away profile: do not hand it the test profile's AiiDA folder.
    monkeypatch.delenv("PYACEMAKER_PROFILE", raising=False)
    monkeypatch.setenv("PYACEMAKER_ROOT", str(ROOT))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    text = "".join(outputs)
    assert "DistillationWorkChain<" in text and "exit status 0" in text
    assert "-> E_DFT =" in text  # structures sent to DFT were found through the graph
    assert "true max force error" in text and "calibration: error =" in text
    assert "rows, by label source" in text
    images = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 4, "the figures must render in the notebook"
