"""Every notebook in notebooks/ runs top to bottom against the session's trained model (so they cannot rot).

Executed in memory with nbclient in a kernel of this very interpreter; the committed notebooks stay without outputs.
"""

import json
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
KERNEL = "synclipmae-test"
# matplotlib_inline's backend is Agg drawing into the cell outputs: headless like MPLBACKEND=Agg, but the plots are
# kept as image outputs (plain Agg would drop them, and ipykernel only picks the inline backend when unset).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def kernel_manager(tmp_path: Path) -> KernelManager:
  """A kernel running this test's interpreter, whatever kernels the machine has installed (none on a fresh CI)."""
  spec_dir = tmp_path / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "SyncLipMAE tests", "language": "python"}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
  return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, trained_run, dub_model, tmp_path, monkeypatch):
  for name, value in {"SYNCLIPMAE_MODEL": trained_run["export"], "SYNCLIPMAE_DUB_MODEL": dub_model,
                      "SYNCLIPMAE_WORKDIR": trained_run["workdir"],
                      "SYNCLIPMAE_DATA": trained_run["corpus"], "MPLBACKEND": INLINE_BACKEND}.items():
    monkeypatch.setenv(name, str(value))  # The kernel inherits this process's environment.
  notebook = nbformat.read(path, as_version=4)
  km = kernel_manager(tmp_path)
  client = nbclient.NotebookClient(notebook, km=km, timeout=CELL_TIMEOUT_S,
                                   resources={"metadata": {"path": str(REPO)}})  # cwd: the repository root.
  try:
    client.execute()  # A failing cell raises CellExecutionError with the cell's traceback.
  finally:
    if km.has_kernel:  # nbclient leaves a kernel it was handed running.
      km.shutdown_kernel(now=True)
  images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
            if "image/png" in o.get("data", {})]
  assert images, f"{path.name} rendered no plot"


def test_notebooks_are_committed_without_outputs():
  assert NOTEBOOKS
  for path in NOTEBOOKS:
    for cell in nbformat.read(path, as_version=4).cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs before committing"
