"""train.py and inference.py as a user runs them: dry runs, then the error cases."""

import json
import math
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


def test_a_model_too_large_for_memory_is_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    result = run_script(PROJECT, "train.py", "--d-model", "100000", "--n-head", "4",
                        "--out", out, expect_code=2)  # fmt: skip
    assert result.stderr.startswith("error: --d-model 100000 ") and "GB" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_inference_at_a_terminal_prompts_for_each_line(translation_run):
    """stdin a pseudo-terminal, as when a user runs `python inference.py` and types."""
    import os
    import pty
    import subprocess
    import sys

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "inference.py", "--checkpoint", str(translation_run / "model.pt")],
        cwd=PROJECT, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TQDM_DISABLE="1"),
    )  # fmt: skip
    os.close(terminal)
    os.write(controller, b"seven\n\x04")  # a line, then Ctrl-D
    stdout, stderr = process.communicate(timeout=120)
    os.close(controller)
    assert process.returncode == 0, stderr
    assert stderr.startswith("type a sentence and press Enter") and stderr.count("> ") == 2
    assert stdout.startswith("seven\t") and len(stdout.strip().splitlines()) == 1


def test_a_pairs_file_is_scored_once_per_english_sentence_with_every_reference(translation_run):
    pairs = translation_run / "pairs.txt"
    pairs.write_text("seven\tsept\nseven\tsept !\nthree hundred\ttrois cents\tattribution\n"
                     "snow ☃\tneige\n", encoding="utf-8")  # fmt: skip
    result = run_script(PROJECT, "inference.py", "--checkpoint", translation_run / "model.pt",
                        "--pairs-file", pairs)  # fmt: skip
    assert "     sept | sept !" in result.stdout
    assert "2 English sentences (3 pairs; 1 skipped" in result.stdout


def test_fresh_topic_texts_are_new_and_classified_by_inference(tmp_path):
    from data import generated_topics

    texts = tmp_path / "fresh.txt"
    key = run_script(PROJECT, "make_texts.py", "--per-topic", "3", "--out", texts).stdout
    lines = texts.read_text().splitlines()
    corpus = {text for text, _ in generated_topics()}
    assert len(lines) == 15 == len(set(lines)) and not corpus & set(lines)
    assert [line.split("\t")[1] for line in key.splitlines()] == lines
    assert [line.split("\t")[0] for line in key.splitlines()[::3]] == [
        "technology", "sports", "science", "music", "food"]  # fmt: skip
    run_script(PROJECT, "train.py", "--task", "classify", "--dry-run", "--out", tmp_path / "c")
    labels = run_script(PROJECT, "inference.py", "--checkpoint", tmp_path / "c" / "model.pt",
                        "-", stdin=texts.read_text()).stdout.splitlines()  # fmt: skip
    assert [line.split("\t")[0] for line in labels] == lines


def test_masked_language_model_pre_training_then_fine_tuning_from_it(tmp_path):
    from train import noam_lr

    from shared.state import read_state

    run_script(PROJECT, "train.py", "--task", "mlm", "--dry-run", "--out", tmp_path / "mlm")
    assert (tmp_path / "mlm" / "masked.png").stat().st_size > 0
    pretrained = tmp_path / "mlm" / "model.pt"
    run_script(PROJECT, "train.py", "--task", "classify", "--dry-run", "--init-from",
               pretrained, "--average-last", "0", "--max-iters", "1", "--eval-interval", "1",
               "--out", tmp_path / "fine")  # fmt: skip
    language_model = read_state(pretrained)["average"]
    classifier = read_state(tmp_path / "fine" / "model.pt")["model"]
    # One fine-tuning step from the pre-trained weights: Adam's first step moves every weight
    # with a gradient by exactly the learning rate (m / sqrt(v) = g / |g|), so nothing moved
    # further than that; weights drawn afresh would differ by far more.
    lr = noam_lr(1, 16, 2)  # the dry run's d_model and warm-up
    for name in ("embed.weight", "encoder.layers.0.ff.linear1.weight"):
        shift = (classifier[name] - language_model[name]).abs().max().item()
        assert math.isclose(shift, lr, rel_tol=1e-4), name
    not_a_language_model = tmp_path / "fine" / "model.pt"
    wrong = run_script(PROJECT, "train.py", "--task", "classify", "--dry-run", "--init-from",
                       not_a_language_model, "--out", tmp_path / "x", expect_code=2)  # fmt: skip
    assert "holds a classify model, not --task mlm" in wrong.stderr


def test_the_tatoeba_recipe_without_its_file_says_where_to_place_it(tmp_path):
    result = run_script(PROJECT, "train.py", "--preset", "tatoeba", "--dry-run", "--data-dir",
                        tmp_path, "--out", tmp_path / "run", expect_code=2)  # fmt: skip
    expected = f"error: no {tmp_path / 'eng-fra' / 'eng-fra.txt'} and no network: place there"
    assert result.stderr.startswith(expected) and len(result.stderr.splitlines()) == 1


def test_a_word_level_dry_run_on_a_pairs_file_with_several_translations(tmp_path):
    lines = [f"{en}\t{fr}" for en, fr in [
        ("go.", "va !"), ("go.", "file !"), ("hi.", "salut."), ("run!", "cours !"),
        ("who?", "qui ?"), ("wow!", "ça alors !"), ("i see.", "je vois."), ("help!", "à l'aide !"),
        ("i won.", "j'ai gagné."), ("stop!", "arrête !"), ("wait!", "attends !"),
        ("hello.", "bonjour."), ("i try.", "j'essaye."), ("no way!", "pas question !"),
    ] * 3]  # fmt: skip
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_script(PROJECT, "train.py", "--dry-run", "--tokens", "words", "--min-count", "1",
               "--pairs-file", pairs, "--out", tmp_path / "run")  # fmt: skip
    scored = run_script(PROJECT, "inference.py", "--checkpoint", tmp_path / "run" / "model.pt",
                        "--pairs-file", pairs).stdout  # fmt: skip
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["metric"] == "bleu" and metrics["value"] == metrics["bleu"]  # real sentences
    assert {"exact_match", "cer", "last_weights_bleu"} <= metrics.keys()
    assert "     va ! | file !" in scored  # every translation of "go." is a reference
    assert "13 English sentences (42 pairs; 0 skipped" in scored
