"""The walkthrough notebook: stored without outputs, and runs top to bottom on the project's kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "smp_walkthrough.ipynb"
KERNEL_NAME = "smp_parsing"


def ensure_kernel() -> None:
    """Install the venv's kernelspec (``make install`` does the same) when it is missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME in KernelSpecManager().find_kernel_specs():
        return
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME,
         "--display-name", "smp_parsing (.venv)"],
        check=True, capture_output=True,
    )  # fmt: skip


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == KERNEL_NAME
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the walkthrough has no code"
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, (
            "strip the outputs before committing"
        )
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for term in ("center heatmap", "offsets", "part center", "Fig. 4"):
        assert term.lower() in text.lower(), f"the walkthrough never explains {term!r}"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    ensure_kernel()
    # The kernel inherits this environment: force the tiny-training path into tmp_path so the
    # test does not depend on (or write into) logs/ of the working copy.
    monkeypatch.setenv("SMP_WALKTHROUGH_TINY", "1")
    monkeypatch.setenv("SMP_WALKTHROUGH_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MPLCONFIGDIR", os.environ.get("MPLCONFIGDIR", str(tmp_path / "mpl")))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, kernel_name=KERNEL_NAME, timeout=900,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )  # fmt: skip
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # The kernel is the venv's Python, and the tiny model was trained into tmp_path.
    assert (
        f"python: {sys.executable}" in printed
        or f"python: {Path(sys.executable).resolve()}" in printed
    )
    assert str(tmp_path / "logs") in printed
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # GT, centers, offsets, part heatmap, masks/parsing, Fig. 4
    last = nb.cells[-1]
    assert any("image/png" in o.get("data", {}) for o in last.outputs), "Fig. 4 figure not shown"
