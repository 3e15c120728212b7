"""The command line as a user meets it: a dry run, inference on what it wrote, and bad input."""

from pathlib import Path

import numpy as np

from shared.checkpoint import load_arrays
from shared.testing import run_script

PROJECT = Path(__file__).resolve().parents[1]
TINY = ("--n-samples", "100", "--hidden", "4", "--gif-frames", "0", "--schedule", "constant")


def test_dry_run_writes_every_output_and_inference_reads_it(tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--out", tmp_path)
    for name in ("model.npz", "metrics.json", "loss.png", "boundary.png", "boundary.gif"):
        assert (tmp_path / name).is_file(), name
    result = run_script(PROJECT, "inference.py", "--checkpoint", tmp_path / "model.npz")
    assert "class" in result.stdout and "[true:" in result.stdout
    threaded = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "model.npz", "--threads", "2"
    )
    assert threaded.stdout == result.stdout
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "model.npz", "0.5", "-0.2"
    )
    assert result.stdout.strip().splitlines()[-1].startswith("0.5 -0.2 -> class")


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    run_script(PROJECT, "train.py", *TINY, "--epochs", "4", "--out", tmp_path / "whole")
    run_script(PROJECT, "train.py", *TINY, "--epochs", "2", "--out", tmp_path / "split")
    run_script(PROJECT, "train.py", *TINY, "--epochs", "4", "--resume", "--out", tmp_path / "split")
    whole, _ = load_arrays(tmp_path / "whole" / "model.npz")
    split, _ = load_arrays(tmp_path / "split" / "model.npz")
    assert whole.keys() == split.keys()
    assert all(np.array_equal(whole[k], split[k]) for k in whole)


def test_bad_input_gets_one_line_and_exit_status_2(tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--out", tmp_path)
    ckpt = tmp_path / "model.npz"
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a checkpoint")
    (tmp_path / "empty.csv").write_text("")
    cases = {
        "is not a file": ("--checkpoint", ckpt, "--csv", tmp_path),
        "holds no points": ("--checkpoint", ckpt, "--csv", tmp_path / "empty.csv"),
        "does not exist": ("--checkpoint", tmp_path / "missing.npz"),
        "truncated or corrupt": ("--checkpoint", corrupt),
        "takes 2 per point": ("--checkpoint", ckpt, "1", "2", "3"),
        "expects a number": ("--checkpoint", ckpt, "1", "x"),
    }
    for expected, args in cases.items():
        result = run_script(PROJECT, "inference.py", *args, expect_code=2)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_script(PROJECT, "train.py", "--hidden", "0", "5", expect_code=2)
    assert "--hidden" in result.stderr and "Traceback" not in result.stderr
    resumes = {
        "was trained with --activation relu, not tanh": ("--out", tmp_path, "--activation", "tanh"),
        "does not exist": ("--out", tmp_path / "never_trained"),
    }
    for expected, args in resumes.items():
        result = run_script(PROJECT, "train.py", "--dry-run", "--resume", *args, expect_code=2)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never_trained").exists()  # checked before anything is written


def test_a_network_too_large_for_memory_stops_before_allocating(tmp_path):
    out = tmp_path / "run"
    result = run_script(
        PROJECT, "train.py", "--hidden", "100000", "100000", "--out", out, expect_code=2
    )
    assert result.stderr.startswith("error: --hidden 100000 100000 needs about 320.")
    assert "GB free" in result.stderr and not (out / "model.npz").exists()


def test_batchnorm_with_a_last_batch_of_one_trains(tmp_path):
    run_script(
        PROJECT,
        "train.py",
        "--batchnorm",
        "--batch-size",
        "11",
        "--epochs",
        "1",
        "--n-samples",
        "1200",
        "--out",
        tmp_path,
    )
