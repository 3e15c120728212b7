import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.state import read_state
from shared.testing import assert_tensors_close, run_script, run_torchrun

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
def unconditional(tmp_path_factory):
    """A run of one unconditional VAE, without the companions."""
    out = tmp_path_factory.mktemp("plain")
    run_script(PROJECT, "train.py", "--dry-run", "--no-companions", "--out", out)
    return out


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "digit.png"
    image = np.zeros((20, 20), np.uint8)
    image[4:16, 8:12] = 255  # a thick "1"
    Image.fromarray(image).save(path)
    return path


def test_dry_run_writes_one_checkpoint_of_all_three_models_metrics_and_every_figure(trained):
    for name in ("model.pt", "config.json", "log.jsonl", *FIGURES):
        assert (trained / name).exists(), name
    ckpt = read_state(trained / "model.pt")
    assert ckpt["step"] == 4 and set(ckpt["configs"]) == {"model", "model_2d", "cvae"}
    assert ckpt["configs"]["model_2d"]["latent_dim"] == 2 and ckpt["configs"]["cvae"]["n_classes"]
    for name in ("model", "model_2d", "cvae", "model_optimizer", "cvae_optimizer", "data_order"):
        assert name in ckpt, name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["metric"] == "iwae_nll" and metrics["higher_is_better"] is False
    # the dry run's k = 6 draws also give IWAE_1 and IWAE_3: the bound tightens with k
    assert metrics["iwae_nll_k1"] >= metrics["iwae_nll_k3"] >= metrics["value"]
    records = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert ["model_test_nelbo" in r for r in records] == [False, True, False, True]


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
        trained / "model.pt",
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
    ckpt = read_state(out / "model.pt")
    config = ckpt["configs"]["cvae"]
    assert config["image_channels"] == 3 and config["n_classes"] == 2 and config["arch"] == "conv"
    assert ckpt["data"]["class_names"] == ["cats", "dogs"]
    assert (out / "class_samples.png").exists()


def _tensors(value, prefix=""):
    """(name, tensor) for every tensor of a nested checkpoint, its training config aside."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "train_config":
                yield from _tensors(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{prefix}/{i}")
    elif torch.is_tensor(value):
        yield prefix, value


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    tiny = ["--hidden", "8", "--latent-dim", "2", "--iwae-samples", "2", "--eval-every", "1"]
    run_script(PROJECT, "train.py", *tiny, "--epochs", "3", "--out", tmp_path / "straight")
    run_script(PROJECT, "train.py", *tiny, "--epochs", "2", "--out", tmp_path / "resumed")
    run_script(
        PROJECT, "train.py", *tiny, "--epochs", "3", "--resume", "--out", tmp_path / "resumed"
    )
    straight = read_state(tmp_path / "straight" / "model.pt")
    resumed = read_state(tmp_path / "resumed" / "model.pt")
    assert resumed["step"] == 3
    ours, theirs = dict(_tensors(resumed)), dict(_tensors(straight))
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():  # epoch 3 differs if any part or generator was lost
        assert torch.equal(ours[name], value), name


def test_resuming_with_another_objective_is_a_one_line_error_that_writes_nothing(tmp_path):
    tiny = ["--hidden", "8", "--epochs", "1", "--no-companions", "--out", tmp_path]
    run_script(PROJECT, "train.py", *tiny)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    result = run_script(PROJECT, "train.py", *tiny, "--beta", "4", "--resume", expect_code=2)
    assert result.stderr == (
        f"error: checkpoint {tmp_path / 'model.pt'} was trained with --beta 1.0, not 4.0; "
        "resume with the flags it was trained with\n"
    )
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    "flags, named",
    [
        (("--hidden", "1000000"), "--hidden 1000000"),
        (("--image-size", "40000"), "--image-size 40000"),
    ],
)
def test_a_size_too_large_for_memory_is_a_one_line_error_naming_the_flag(tmp_path, flags, named):
    result = run_script(PROJECT, "train.py", *flags, "--out", tmp_path / "run", expect_code=2)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert named in result.stderr and "GB, more than the" in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_iwae_trend_that_does_not_divide_k_is_refused():
    result = run_script(
        PROJECT, "train.py", "--iwae-samples", "10", "--iwae-trend", "3", expect_code=2
    )
    assert result.stderr == (
        "error: --iwae-trend 3 does not divide --iwae-samples 10 (see --help)\n"
    )


def test_the_mnist_preset_reports_the_k_trend_from_5000_draws():
    from train import TrainConfig

    from shared.cli import parse_config

    cfg = parse_config(TrainConfig, ["--preset", "mnist"])
    assert (cfg.dataset, cfg.iwae_samples, cfg.iwae_trend) == ("mnist", 5000, (1, 5, 50))
    assert parse_config(TrainConfig, ["--preset", "mnist", "--epochs", "2"]).epochs == 2


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


def test_asking_a_run_without_a_conditional_vae_for_a_class_is_a_one_line_error(unconditional):
    result = run_script(
        PROJECT,
        "inference.py",
        "--checkpoint",
        unconditional / "model.pt",
        "--class",
        "1",
        expect_code=2,
    )
    assert "holds no conditional VAE" in result.stderr and result.stderr.count("\n") == 1


def test_inference_threads_change_the_speed_not_the_samples(trained, tmp_path):
    ckpt = trained / "model.pt"
    for threads in ("1", "2"):
        out = tmp_path / f"samples_{threads}.png"
        flags = ("--checkpoint", ckpt, "--threads", threads, "--out", out)
        run_script(PROJECT, "inference.py", *flags)
    assert (tmp_path / "samples_1.png").read_bytes() == (tmp_path / "samples_2.png").read_bytes()


def test_zero_samples_is_refused_and_help_states_each_default_once(trained):
    result = run_script(PROJECT, "inference.py", "--sample", "0", expect_code=2)
    assert "--sample must be >= 1" in result.stderr
    help_text = " ".join(run_script(PROJECT, "train.py", "--help").stdout.split())
    assert "(default: off) (default: off)" not in help_text
    assert "conditional VAE: encoder and decoder also see the class (default: off)" in help_text


def test_two_processes_train_exactly_as_one_with_the_same_global_batch(trained, tmp_path):
    flags = ("--dry-run", "--device", "cpu", "--batch-size", "64")
    run_script(PROJECT, "train.py", *flags, "--out", tmp_path / "one")
    run_torchrun(PROJECT, "train.py", *flags, "--out", tmp_path / "two", timeout=300)
    one = dict(_tensors(read_state(tmp_path / "one" / "model.pt")))
    two = dict(_tensors(read_state(tmp_path / "two" / "model.pt")))
    per_process = {k for k in two if k.startswith("/rng_ranks/")}  # each process's generators
    shared_parts = {k: v for k, v in two.items() if k not in per_process}
    assert per_process and shared_parts.keys() == one.keys()
    assert_tensors_close(shared_parts, one, atol=1e-5)  # three models and their Adam moments
    # Rank 1 wrote nothing: the same files, one log line per epoch.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    logs = [(tmp_path / d / "log.jsonl").read_text().splitlines() for d in ("one", "two")]
    assert len(logs[0]) == len(logs[1])


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    from train import check_split

    from shared.errors import UserError
    from shared.runtime import Distributed

    two = Distributed(True, 0, 0, 2, torch.device("cpu"))
    check_split(two, 1000, 64)  # 15 batches of 64 and one of 40: all even
    with pytest.raises(UserError, match="leaves batches of 64 and 39"):
        check_split(two, 999, 64)


def test_bf16_autocast_on_the_cpu_trains_close_to_float32(unconditional, tmp_path):
    flags = ("--dry-run", "--no-companions", "--precision", "bf16")
    run_script(PROJECT, "train.py", *flags, "--out", tmp_path)
    fp32, bf16 = (
        [json.loads(line)["model_train_loss"] for line in (d / "log.jsonl").open()]
        for d in (unconditional, tmp_path)
    )
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)
