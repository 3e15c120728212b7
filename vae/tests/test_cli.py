import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.testing import run_script

PROJECT = Path(__file__).parents[1]
FIGURES = (
    "loss.png",
    "reconstructions.png",
    "samples.png",
    "latent.png",
    "manifold.png",
    "interpolation.png",
    "class_samples.png",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_script(PROJECT, "train.py", "--dry-run", "--out", out)
    return out


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "digit.png"
    image = np.zeros((20, 20), np.uint8)
    image[4:16, 8:12] = 255  # a thick "1"
    Image.fromarray(image).save(path)
    return path


def test_dry_run_writes_checkpoints_metrics_and_every_figure(trained):
    for name in ("model.pt", "model_2d.pt", "cvae.pt", "config.json", "log.jsonl", *FIGURES):
        assert (trained / name).exists(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["metric"] == "iwae_nll" and metrics["higher_is_better"] is False
    assert metrics["value"] <= metrics["elbo_nll"]


def test_inference_draws_samples_from_the_default_mode(trained):
    result = run_script(PROJECT, "inference.py", "--checkpoint", trained / "model.pt")
    assert (trained / "inference_samples.png").exists() and "wrote" in result.stdout


def test_inference_reconstructs_and_interpolates_image_files(trained, digit_png, tmp_path):
    ckpt = trained / "model.pt"
    run_script(
        PROJECT,
        "inference.py",
        "--checkpoint",
        ckpt,
        "--reconstruct",
        digit_png,
        "--out",
        tmp_path / "recon.png",
    )
    run_script(
        PROJECT,
        "inference.py",
        "--checkpoint",
        ckpt,
        "--interpolate",
        digit_png,
        digit_png,
        "--invert",
        "--steps",
        "4",
        "--out",
        tmp_path / "line.png",
    )
    # two 8x8 images, 1-pixel borders, enlarged 8 times
    assert Image.open(tmp_path / "recon.png").size == ((2 * (8 + 1) + 1) * 8, (8 + 1 + 1) * 8)
    assert (tmp_path / "line.png").exists()


def test_inference_draws_one_class_from_the_conditional_vae(trained, tmp_path):
    result = run_script(
        PROJECT,
        "inference.py",
        "--checkpoint",
        trained / "cvae.pt",
        "--class",
        "7",
        "--out",
        tmp_path / "sevens.png",
    )
    assert "class 7" in result.stdout and (tmp_path / "sevens.png").exists()


def test_a_conv_continuous_bernoulli_vae_trains_on_a_folder_of_rgb_images(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / cls / f"{i}.png")
    out = tmp_path / "run"
    run_script(
        PROJECT,
        "train.py",
        "--dry-run",
        "--image-dir",
        tmp_path / "pics",
        "--image-size",
        "8",
        "--arch",
        "conv",
        "--likelihood",
        "continuous-bernoulli",
        "--out",
        out,
    )
    ckpt = torch.load(out / "cvae.pt", weights_only=True)
    assert ckpt["config"]["image_channels"] == 3 and ckpt["config"]["n_classes"] == 2
    assert ckpt["data"]["class_names"] == ["cats", "dogs"]
    assert (out / "class_samples.png").exists()


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    tiny = ["--hidden", "8", "--latent-dim", "2", "--iwae-samples", "2", "--no-companions"]
    run_script(PROJECT, "train.py", *tiny, "--epochs", "3", "--out", tmp_path / "straight")
    run_script(PROJECT, "train.py", *tiny, "--epochs", "2", "--out", tmp_path / "resumed")
    run_script(
        PROJECT, "train.py", *tiny, "--epochs", "3", "--resume", "--out", tmp_path / "resumed"
    )
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert resumed["epoch"] == 3 and resumed["history"]["epoch"] == [2, 3]  # evaluated at each end
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    other_beta = ("--beta", "4", "--epochs", "4", "--resume", "--out", tmp_path / "resumed")
    result = run_script(PROJECT, "train.py", *tiny, *other_beta, expect_code=2)
    assert "other settings (beta)" in result.stderr and result.stderr.count("\n") == 1


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "none.pt", expect_code=2
    )
    assert result.stderr.strip() == (
        f"error: checkpoint {tmp_path / 'none.pt'} does not exist (train first: python train.py)"
    )


def test_a_file_that_is_not_an_image_is_a_one_line_error(trained, tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    result = run_script(
        PROJECT,
        "inference.py",
        "--checkpoint",
        trained / "model.pt",
        "--reconstruct",
        tmp_path / "notes.png",
        expect_code=2,
    )
    assert (
        result.stderr.strip() == f"error: {tmp_path / 'notes.png'} is not a readable image "
        "(UnidentifiedImageError)"
    )


def test_asking_an_unconditional_vae_for_a_class_is_a_one_line_error(trained):
    result = run_script(
        PROJECT,
        "inference.py",
        "--checkpoint",
        trained / "model.pt",
        "--class",
        "1",
        expect_code=2,
    )
    assert "not a conditional VAE" in result.stderr


def test_zero_samples_is_refused_and_help_states_each_default_once(trained):
    result = run_script(PROJECT, "inference.py", "--sample", "0", expect_code=2)
    assert "--sample must be >= 1" in result.stderr
    help_text = " ".join(run_script(PROJECT, "train.py", "--help").stdout.split())
    assert "(default: off) (default: off)" not in help_text
    assert "conditional VAE: encoder and decoder also see the class (default: off)" in help_text
