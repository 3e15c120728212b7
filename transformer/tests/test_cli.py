"""train.py and inference.py as a user runs them: dry runs, then the error cases."""

from pathlib import Path

import pytest

from shared.testing import run_script

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A dry run stopped after 2 of its 4 steps, then continued with --resume: one run serves
    the resume test and, as the finished run, every inference test."""
    out = tmp_path_factory.mktemp("translate")
    run_script(PROJECT, "train.py", "--dry-run", "--max-iters", "2", "--out", out)
    resumed = run_script(PROJECT, "train.py", "--dry-run", "--resume", "--out", out)
    return out, resumed


@pytest.fixture(scope="module")
def translation_run(resumed_run):
    return resumed_run[0]


def test_dry_run_writes_every_output(translation_run):
    for name in ("model.pt", "metrics.json", "log.jsonl", "loss.png", "score.png",
                 "attention.png", "examples.txt"):  # fmt: skip
        assert (translation_run / name).is_file(), name


def test_inference_translates_with_greedy_and_beam_search(translation_run):
    ckpt = translation_run / "model.pt"
    greedy = run_script(PROJECT, "inference.py", "--checkpoint", ckpt, "three hundred forty-two")
    beam = run_script(PROJECT, "inference.py", "--checkpoint", ckpt, "--beam", "3", "seven")
    assert greedy.stdout.startswith("three hundred forty-two\t")
    assert beam.stdout.startswith("seven\t")


def test_inference_without_text_uses_the_stored_examples(translation_run):
    result = run_script(PROJECT, "inference.py", "--checkpoint", translation_run / "model.pt",
                        stdin="")  # fmt: skip
    assert len(result.stdout.strip().splitlines()) == 5


def test_unknown_characters_are_a_one_line_error(translation_run):
    result = run_script(PROJECT, "inference.py", "--checkpoint", translation_run / "model.pt",
                        "héllo ☃", expect_code=2)  # fmt: skip
    assert result.stderr.strip() == "error: characters not in the vocabulary: '☃'"


def test_missing_and_corrupt_checkpoints_are_one_line_errors(tmp_path):
    result = run_script(PROJECT, "inference.py", "--checkpoint", tmp_path / "no.pt", "one",
                        expect_code=2)  # fmt: skip
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a checkpoint")
    result = run_script(PROJECT, "inference.py", "--checkpoint", corrupt, "one", expect_code=2)
    assert "corrupt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_impossible_flags_are_refused():
    result = run_script(PROJECT, "train.py", "--d-model", "30", "--n-head", "4", expect_code=2)
    assert "not a multiple of --n-head" in result.stderr


def test_classifier_dry_run_then_labels_lines_from_stdin(tmp_path):
    run_script(PROJECT, "train.py", "--task", "classify", "--dry-run", "--out", tmp_path)
    ckpt = tmp_path / "model.pt"
    result = run_script(PROJECT, "inference.py", "--checkpoint", ckpt, "-",
                        stdin="the new guitar was loud\nmy pizza needs a chef\n")  # fmt: skip
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("the new guitar was loud\t")
    wrong = run_script(PROJECT, "inference.py", "--checkpoint", ckpt, "--task", "translate",
                       "one", expect_code=2)  # fmt: skip
    assert "holds a classify model" in wrong.stderr


def test_resume_continues_a_run_from_its_checkpoint(resumed_run):
    out, result = resumed_run
    assert "resuming" in result.stdout and "at step 2" in result.stdout
    assert "step 4:" in result.stdout  # it went on to the end
    steps = [line for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(steps) == 4  # steps 1-2 before the stop, 3-4 after: none repeated or lost


def test_a_resume_with_other_settings_is_refused_and_leaves_the_run_alone(resumed_run):
    out, _ = resumed_run
    config_before = (out / "config.json").read_text()
    args = ("--dry-run", "--resume", "--task", "classify", "--out", out)
    result = run_script(PROJECT, "train.py", *args, expect_code=2)
    assert "was trained with --task" in result.stderr and result.stderr.count("\n") == 1
    assert (out / "config.json").read_text() == config_before


@pytest.mark.parametrize("task", ["translate", "classify"])
def test_fused_attention_dry_run_draws_the_attention_maps(task, tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--fused-attention", "--task", task,
               "--out", tmp_path)  # fmt: skip
    assert (tmp_path / "attention.png").stat().st_size > 0
    assert (tmp_path / "metrics.json").is_file()


def test_a_binary_pairs_file_is_a_one_line_error(tmp_path):
    binary = tmp_path / "pairs.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = run_script(PROJECT, "train.py", "--dry-run", "--pairs-file", binary,
                        "--out", tmp_path / "run", expect_code=2)  # fmt: skip
    assert "is not UTF-8 text" in result.stderr and len(result.stderr.splitlines()) == 1
