import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.logging import read_log
from shared.testing import run_script

PROJECT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, run_script(PROJECT, "train.py", "--dry-run", "--out", out).stdout


@pytest.fixture(scope="module")
def trained(dry_run):
    return dry_run[0]


def test_dry_run_logs_every_step_of_both_stages_and_prints_each_guidance(dry_run):
    out, stdout = dry_run
    records = read_log(out)
    assert [(r["step"], r["stage"]) for r in records] == [
        (1, "autoencoder"),
        (2, "autoencoder"),
        *[(s, "diffusion") for s in range(3, 7)],
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    for guidance in ("1.0", "2.0", "3.0", "4.0"):
        numbers = metrics["by_guidance"][guidance]
        line = (
            f"guidance {float(guidance):g}: prompt accuracy {numbers['prompt_accuracy']:.3f}, "
            f"corner accuracy {numbers['attribute_accuracy']:.3f}"
        )
        assert line in stdout
    assert metrics["value"] == metrics["by_guidance"]["3.0"]["prompt_accuracy"]
    with Image.open(out / "samples.png") as grid:  # ten labelled rows, four columns
        assert grid.size[1] > 1.5 * grid.size[0]


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


def test_resume_refuses_other_network_flags_and_leaves_the_run_alone(trained):
    before = (trained / "log.jsonl").read_text()
    result = run_script(
        PROJECT,
        "train.py",
        "--dry-run",
        "--out",
        trained,
        "--resume",
        "--canvas",
        "32",
        expect_code=2,
    )
    assert "--canvas 24, not 32" in result.stderr
    assert (trained / "log.jsonl").read_text() == before


def test_absurd_sizes_stop_before_allocating():
    result = run_script(PROJECT, "train.py", "--unet-channels", "80000", expect_code=2)
    assert "--unet-channels 80000" in result.stderr and "GB" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["a purple dog", "--checkpoint", "{ckpt}"], "does not know: dog, purple"),
        (["  ", "--checkpoint", "{ckpt}"], "empty prompt"),
        (["\u2603 !!", "--checkpoint", "{ckpt}"], "does not know: '\u2603'"),
        (["digit two \u2603", "--checkpoint", "{ckpt}"], "does not know: '\u2603'"),
        (["!!", "--checkpoint", "{ckpt}"], "has no words"),
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
    monkeypatch.setenv("SD_CHECKPOINT", str(trained / "model.pt"))  # the kernel inherits it
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": PROJECT}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert "loaded" in "".join(o.get("text", "") for o in outputs)
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 6  # the first prompt, three guidance scales, negative, img2img
