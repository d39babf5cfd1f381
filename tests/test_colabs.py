"""Every notebook in colabs/ runs top to bottom on its tiny setting (R1JAX_COLAB_SETTING=tiny)
without a cell raising, as a fresh Jupyter kernel started in colabs/ would run it."""
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

COLABS = pathlib.Path(__file__).resolve().parent.parent / "colabs"
NOTEBOOKS = sorted(COLABS.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def kernel_environment(tmp_path: pathlib.Path) -> dict:
    """The tiny setting, one CPU device (as a Colab CPU runtime; not conftest's 8 fake ones),
    and data sets and workdirs under tmp_path."""
    return dict(os.environ, R1JAX_COLAB_SETTING="tiny", JAX_PLATFORMS="cpu",
                XLA_FLAGS="--xla_force_host_platform_device_count=1",
                R1JAX_DATA_DIR=str(tmp_path / "data"), R1JAX_COLAB_WORKDIR=str(tmp_path / "workdir"),
                MPLBACKEND="module://matplotlib_inline.backend_inline")


def test_there_are_the_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_chat_logits_kv_cache.ipynb",
                                           "02_r1_zero_grpo.ipynb", "03_reward_debugging.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_saved_clean_with_install_and_setting_cells(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs"
    assert "pip_install" in code[0].source and "SETTING = " in code[1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_its_tiny_setting(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(COLABS)}})
    client.execute(env=kernel_environment(tmp_path))  # raises CellExecutionError on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shows = sum(c.source.count("plt.show()") for c in nb.cells if c.cell_type == "code")
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images == shows, f"{shows} plots drawn, {images} rendered inline"
