import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.testing import run_script

PROJECT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # The default data dir: the digit judge is trained once there and reused by later runs.
    out = tmp_path_factory.mktemp("run")
    run_script(PROJECT, "train.py", "--dry-run", "--out", out)
    return out


def test_dry_run_writes_checkpoint_metrics_and_figures(trained):
    for name in (
        "model.pt",
        "metrics.json",
        "reconstructions.png",
        "samples.png",
        "autoencoder_loss.png",
        "diffusion_loss.png",
        "log.jsonl",
    ):
        assert (trained / name).exists(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["metric"] == "prompt_accuracy" and 0 <= metrics["value"] <= 1
    assert 0 <= metrics["attribute_accuracy"] <= 1 and "by_guidance" in metrics


def test_inference_with_negative_prompt_and_init_image(trained, tmp_path):
    checkpoint = trained / "model.pt"
    run_script(
        PROJECT,
        "inference.py",
        "the number 3, bottom right",
        "--checkpoint",
        checkpoint,
        "--num",
        "2",
        "--steps",
        "2",
        "--out",
        tmp_path / "a.png",
    )
    Image.fromarray((np.random.default_rng(0).random((30, 30)) * 255).astype(np.uint8)).save(
        tmp_path / "init.png"
    )
    run_script(
        PROJECT,
        "inference.py",
        "digit seven, upper left",
        "--checkpoint",
        checkpoint,
        "--num",
        "2",
        "--steps",
        "2",
        "--negative-prompt",
        "top right",
        "--init-image",
        tmp_path / "init.png",
        "--out",
        tmp_path / "b.png",
    )
    assert (tmp_path / "a.png").exists() and (tmp_path / "b.png").exists()


def test_resume_finishes_a_saved_run(trained):
    run_script(
        PROJECT,
        "train.py",
        "--dry-run",
        "--out",
        trained,
        "--resume",
        "--data-dir",
        trained.parent.parent / "data0",
    )
    assert (trained / "metrics.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["a purple dog", "--checkpoint", "{ckpt}"], "does not know: dog, purple"),
        (["  ", "--checkpoint", "{ckpt}"], "empty prompt"),
        (["digit one", "--checkpoint", "missing.pt"], "does not exist"),
        (["digit one", "--checkpoint", "{ckpt}", "--init-image", "{ckpt}"], "is not an image"),
    ],
)
def test_bad_prompts_and_files_get_one_line_errors(trained, args, message):
    args = [a.format(ckpt=trained / "model.pt") for a in args]
    result = run_script(PROJECT, "inference.py", *args, expect_code=2)
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_the_notebook_executes(trained, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(PROJECT / "sample_stable_diffusion.ipynb", as_version=4)
    monkeypatch.setenv("SD_CHECKPOINT", str(trained / "model.pt"))  # the kernel inherits these
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": PROJECT}}
    ).execute()
    outputs = "".join(
        o.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "loaded" in outputs
