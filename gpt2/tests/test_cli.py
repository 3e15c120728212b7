import json
import math
from pathlib import Path

import pytest
import torch

from shared.errors import CheckpointError, UserError
from shared.logging import read_log
from shared.testing import assert_tensors_close, run_script, run_torchrun

PROJECT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Dry-run flags on a small text file (building the stdlib corpus takes seconds).
    Two micro-batches per step: one process accumulates both, two DDP processes take one each."""
    text = tmp_path_factory.mktemp("data") / "fox.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 300)
    return ("--dry-run", "--dataset", text, "--grad-accum", "2", "--device", "cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("run")
    run_script(PROJECT, "train.py", *tiny, "--out", out)
    return out


def test_dry_run_writes_checkpoint_metrics_plot_and_samples(trained):
    for name in ("model.pt", "metrics.json", "config.json", "log.jsonl", "loss.png", "samples.txt"):
        assert (trained / name).exists(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["metric"] == "val_loss" and math.isfinite(metrics["value"])
    assert metrics["unigram_val_loss"] > 0 and metrics["steps"] == 4
    # One token per character, one byte per (ASCII) character: nats per token are nats per
    # character, and bits per byte are those nats / ln 2.
    assert metrics["val_loss_per_char"] == pytest.approx(metrics["value"])
    assert metrics["val_bits_per_byte"] == pytest.approx(metrics["value"] / math.log(2))


def test_inference_streams_samples_from_the_dry_run_checkpoint(trained):
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", trained / "model.pt", "--max-new-tokens", "20"
    )
    assert result.stdout.count("--- sample") == 2 and "The " in result.stdout


def test_resume_continues_with_the_identical_next_losses(tiny, trained, tmp_path):
    # Stop after 2 of the 4 steps (the learning-rate schedule still spans 4), then resume.
    run_script(
        PROJECT, "train.py", *tiny, "--max-iters", "2", "--lr-decay-iters", "4", "--out", tmp_path
    )
    result = run_script(PROJECT, "train.py", *tiny, "--resume", "--out", tmp_path)
    assert "resuming at step 2" in result.stdout
    full = {r["step"]: r["loss"] for r in read_log(trained) if "loss" in r}
    resumed = {r["step"]: r["loss"] for r in read_log(tmp_path) if "loss" in r}
    assert resumed == pytest.approx(full, rel=1e-6) and sorted(resumed) == [1, 2, 3, 4]


def test_ddp_with_two_processes_matches_one_process_on_the_same_global_batch(
    tiny, trained, tmp_path
):
    run_torchrun(PROJECT, "train.py", *tiny, "--out", tmp_path, timeout=600)
    one = torch.load(trained / "model.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "model.pt", weights_only=True)["model"]
    assert_tensors_close(two, one, atol=1e-6)
    # Rank 1 wrote nothing: the same files, and one log line per step, not two.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in trained.iterdir())
    assert len(read_log(tmp_path)) == len(read_log(trained))


def test_resume_under_torchrun_gives_each_process_its_generator_back(tiny, tmp_path):
    # Dropout makes the processes' random streams matter; 2 of 4 steps, then resume.
    flags = (*tiny, "--dropout", "0.2", "--lr-decay-iters", "4")
    run_torchrun(PROJECT, "train.py", *flags, "--out", tmp_path / "full", timeout=600)
    run_torchrun(
        PROJECT, "train.py", *flags, "--max-iters", "2", "--out", tmp_path / "cut", timeout=600
    )
    run_torchrun(PROJECT, "train.py", *flags, "--resume", "--out", tmp_path / "cut", timeout=600)
    full, cut = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("full", "cut"))
    assert_tensors_close(cut["model"], full["model"], atol=0, rtol=0)
    result = run_script(
        PROJECT, "train.py", *flags, "--resume", "--out", tmp_path / "cut", expect_code=2
    )
    assert "written by 2 processes, not 1" in result.stderr


def test_bf16_autocast_on_the_cpu_trains_close_to_float32(tiny, trained, tmp_path):
    run_script(PROJECT, "train.py", *tiny, "--precision", "bf16", "--out", tmp_path)
    fp32 = [r["loss"] for r in read_log(trained) if "loss" in r]
    bf16 = [r["loss"] for r in read_log(tmp_path) if "loss" in r]
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.02)


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--prompt", ""), "--prompt is empty"),
        (("--prompt", "é"), "characters not in the vocabulary: 'é'"),
        (("--prompt-ids", "1", "999"), "token ids outside the vocabulary"),
    ],
)
def test_bad_prompts_get_a_one_line_error(trained, flags, message):
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", trained / "model.pt", *flags, expect_code=2
    )
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_resuming_with_another_config_gets_a_one_line_error(tiny, trained):
    result = run_script(
        PROJECT,
        "train.py",
        *tiny,
        "--tokenizer",
        "bpe",
        "--resume",
        "--out",
        trained,
        expect_code=2,
    )
    assert "was trained with --tokenizer char, not bpe" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    import inference

    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    cfg = inference.SampleConfig(checkpoint=str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="lacks 'model'"):
        inference.main(cfg)


def test_a_missing_dataset_gets_a_one_line_error_and_no_run_folder(tmp_path):
    out = tmp_path / "run"
    result = run_script(
        PROJECT, "train.py", "--dataset", tmp_path / "typo.txt", "--out", out, expect_code=2
    )
    assert "typo.txt does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nor is runs/latest repointed: start_run never ran


def test_a_model_too_large_for_memory_gets_a_one_line_error_naming_the_flag(tmp_path):
    text = tmp_path / "fox.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 30)
    out = tmp_path / "run"
    flags = ("--dataset", text, "--n-embd", "1000000", "--out", out)
    result = run_script(PROJECT, "train.py", *flags, expect_code=2)
    assert "--n-embd 1000000" in result.stderr and "GB free" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_impossible_model_shapes_are_refused_before_training():
    import train

    with pytest.raises(UserError, match="not a multiple of --n-head"):
        train.TrainConfig(n_embd=30, n_head=4).check()


def test_bpe_dry_run_trains_its_own_tokenizer(tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--tokenizer", "bpe", "--out", tmp_path)
    result = run_script(
        PROJECT,
        "inference.py",
        "--checkpoint",
        tmp_path / "model.pt",
        "--prompt",
        "héllo",
        "--max-new-tokens",
        "5",
        "--num-samples",
        "1",
    )
    assert result.stdout.splitlines()[1].startswith("héllo")


def test_inference_samples_from_a_hugging_face_gpt2_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    import inference

    config = transformers.GPT2Config(
        vocab_size=8, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=7, eos_token_id=7
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    # A tiny vocabulary in OpenAI's format (Hugging Face's file names): a space is written "Ġ".
    encoder = {"t": 0, "h": 1, "e": 2, "Ġ": 3, "Ġt": 4, "he": 5, "Ġthe": 6, "<|endoftext|>": 7}
    (tmp_path / "vocab.json").write_text(json.dumps(encoder))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\nh e\nĠt he\n")
    cfg = inference.SampleConfig(pretrained=str(tmp_path), prompt=" the", max_new_tokens=5)
    samples = inference.main(cfg)
    assert len(samples) == 2 and all(s.startswith(" the") for s in samples)


def test_a_hugging_face_folder_of_another_model_gets_a_one_line_error(tmp_path):
    # e.g. a Llama config: "max_position_embeddings", not GPT-2's "n_positions".
    config = {"vocab_size": 8, "max_position_embeddings": 16, "num_hidden_layers": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "vocab.json").write_text(json.dumps({"t": 0, "<|endoftext|>": 1}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    result = run_script(PROJECT, "inference.py", "--pretrained", tmp_path, expect_code=2)
    assert "config.json has no 'n_positions'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
