"""Real chest X-rays, when the shared folder exists beside the project (``../shared/data/cxr-real``, or the folder
named by ``MEDSG_CXR_REAL``): notebook 01 through papermill and a few training steps of every model on them.

Skipped, with the reason, where the folder is absent (e.g. a user's clone): the images are never part of the
repository (mixed licences, see that folder's README).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from medsg_lib.files import LOG_NAME, read_jsonl
from medsg_lib.paths import project_root
from medsg_lib.profiles import get_profile
from medsg_lib.training import train

CXR_REAL = Path(os.environ.get("MEDSG_CXR_REAL", project_root().parent / "shared" / "data" / "cxr-real"))
pytestmark = pytest.mark.skipif(
    not (CXR_REAL / "train").is_dir(), reason=f"no real X-rays at {CXR_REAL} (set MEDSG_CXR_REAL)"
)


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory: pytest.TempPathFactory):
    prof = get_profile("smoke")
    cache = tmp_path_factory.mktemp("cxr-cache")
    return replace(prof.data, layout="folders", root=CXR_REAL, cache_dir=cache)


@pytest.mark.slow
def test_notebook_01_reads_the_real_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill as pm

    # resolved before MEDSG_ROOT points elsewhere: the notebook is read from the checkout
    repo = project_root()
    out = tmp_path / "01.ipynb"
    # the notebook's kernel inherits MEDSG_ROOT: its outputs go under tmp_path, never into the repository
    monkeypatch.setenv("MEDSG_ROOT", str(tmp_path))
    summary = tmp_path / "results" / "smoke-folders-cxr-real" / "data_summary.json"
    pm.execute_notebook(
        str(repo / "notebooks" / "01_data_exploration.ipynb"),
        str(out),
        parameters={"profile": "smoke", "layout": "folders", "data_root": str(CXR_REAL)},
        cwd=str(repo),
        progress_bar=False,
        kernel_name="python3",
    )
    assert summary.is_file()  # other data writes its own folder, never the committed results/


@pytest.mark.slow
@pytest.mark.parametrize("model", ["medsg", "dcgan", "gan"])
def test_a_few_training_steps_on_real_images(model: str, data_cfg, tmp_path: Path) -> None:
    prof = get_profile("smoke")
    cfg = replace(prof.train_config(model, "all"), iterations=2, log_every=1)
    train(cfg, replace(data_cfg, img_size=cfg.img_size), tmp_path / model, progress=False)
    log = read_jsonl(tmp_path / model / LOG_NAME)
    assert [r["step"] for r in log] == [1, 2]
    assert all(v == v for r in log for v in r.values() if isinstance(v, float))  # no NaN
