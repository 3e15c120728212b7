"""train.py and inference.py end to end, the way a user runs them, and their one-line errors."""

import json
from pathlib import Path

import numpy as np
from data import TextBatches, Vocabulary, pad_names, unigram_bigram_losses
from model import Adam, CharRNN, ModelConfig, clip_grad_norm

from shared.state import read_state
from shared.testing import run_script

PROJECT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_output_and_inference_continues_a_prompt_of_known_characters(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat on the mat. " * 200)
    run_script(PROJECT, "train.py", "--dry-run", "--text-file", text, "--out", tmp_path / "run")
    for name in ["model.npz", "metrics.json", "loss.png", "samples.txt", "config.json"]:
        assert (tmp_path / "run" / name).exists(), name
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"unigram_val_loss", "bigram_val_loss", "val_bits_per_char"} <= set(metrics)
    checkpoint = tmp_path / "run" / "model.npz"
    args = ["--checkpoint", checkpoint, "--prompt", "the ", "--length", "30", "--seed", "3"]
    first = run_script(PROJECT, "inference.py", *args).stdout
    again = run_script(PROJECT, "inference.py", *args).stdout
    assert first.startswith("the ") and len(first.rstrip("\n")) >= 4 and first == again
    unknown = run_script(
        PROJECT, "inference.py", "--checkpoint", checkpoint, "--prompt", "hé!", expect_code=2
    )
    assert unknown.stderr.strip() == "error: characters not in the vocabulary: '!', 'é'"


def test_name_model_generates_names_from_a_chosen_first_letter(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["anna", "bob", "kate", "kim", "karl", "liz"] * 20))
    run_script(PROJECT, "train.py", "--dry-run", "--names-file", names, "--out", tmp_path / "run")
    checkpoint = tmp_path / "run" / "model.npz"
    out = run_script(
        PROJECT, "inference.py", "--checkpoint", checkpoint, "--start", "k", "--count", "5"
    )
    lines = out.stdout.rstrip("\n").split("\n")
    assert len(lines) == 5 and all(line.startswith("k") for line in lines)
    threaded = run_script(
        PROJECT, "inference.py", "--checkpoint", checkpoint, "--start", "k", "--count", "5",
        "--threads", "2",
    )  # fmt: skip
    assert threaded.stdout == out.stdout  # threads change the speed, never the samples


def test_a_names_file_keeps_its_capital_letters(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["Chloe", "Carl", "Anna", "Bob"] * 30))
    run_script(PROJECT, "train.py", "--dry-run", "--names-file", names, "--out", tmp_path / "run")
    checkpoint = tmp_path / "run" / "model.npz"
    out = run_script(
        PROJECT, "inference.py", "--checkpoint", checkpoint, "--start", "C", "--count", "4"
    )
    lines = out.stdout.rstrip("\n").split("\n")
    assert len(lines) == 4 and all(line.startswith("C") for line in lines)


def test_a_model_too_large_for_memory_stops_before_allocating(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("abcdefgh " * 300)
    args = ["--text-file", text, "--hidden", "1000000", "--out", tmp_path / "run"]
    result = run_script(PROJECT, "train.py", *args, expect_code=2)
    assert result.stderr.startswith("error: --hidden 1000000 --n-layer 1 --batch-size ")
    assert "GB free" in result.stderr and not (tmp_path / "run" / "model.npz").exists()


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("abcdefgh " * 300)
    tiny = ["--text-file", text, "--hidden", "8", "--n-embd", "4", "--batch-size", "2"]
    tiny += ["--seq-len", "8", "--eval-interval", "2", "--checkpoint-interval", "2"]
    tiny += ["--sample-length", "10", "--out", tmp_path / "run"]
    run_script(PROJECT, "train.py", *tiny, "--max-steps", "4")
    resumed = run_script(PROJECT, "train.py", *tiny, "--max-steps", "8", "--resume")
    assert "resuming from step 4" in resumed.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 8
    log_steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").open()]
    assert log_steps == [2, 4, 6, 8]  # the second run picked up where the first stopped
    other = run_script(PROJECT, "train.py", *tiny, "--resume", "--hidden", "9", expect_code=2)
    assert "trained with --hidden 8, not 9" in other.stderr


def test_a_killed_run_with_dropout_and_cosine_decay_resumes_exactly(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["anna", "bob", "kate", "kim", "karl", "liz"] * 20))
    flags = ["--names-file", names, "--hidden", "8", "--n-embd", "4", "--batch-size", "4"]
    flags += ["--dropout", "0.3", "--lr-decay", "cosine", "--max-steps", "8"]
    flags += ["--eval-interval", "1", "--checkpoint-interval", "4", "--sample-length", "5"]
    run_script(PROJECT, "train.py", *flags, "--out", tmp_path / "straight")
    killed = tmp_path / "killed"  # SIGKILL right after logging step 6, between two checkpoints
    run_script(
        PROJECT, "train.py", *flags, "--out", killed, expect_code=-9, env={"DLFS_KILL_AT": "6"}
    )
    resumed = run_script(PROJECT, "train.py", *flags, "--out", killed, "--resume")
    assert "resuming from step 4" in resumed.stdout

    def logged(run):  # every number but the clock
        records = [json.loads(line) for line in (run / "log.jsonl").open()]
        return [{k: v for k, v in r.items() if k != "time_s"} for r in records]

    assert logged(killed)[-4:] == logged(tmp_path / "straight")[-4:]  # steps 5-8, lr included
    straight_model = read_state(tmp_path / "straight" / "model.npz")["model"]
    resumed_model = read_state(killed / "model.npz")["model"]
    for name, array in straight_model.items():  # same masks, same names, same learning rates
        np.testing.assert_array_equal(resumed_model[name], array, err_msg=name)


def test_bad_input_gets_one_line_and_exit_status_2(tmp_path):
    missing = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "no.npz", expect_code=2
    )
    assert "does not exist" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a checkpoint at all")
    bad = run_script(PROJECT, "inference.py", "--checkpoint", corrupt, expect_code=2)
    assert "corrupt" in bad.stderr and "Traceback" not in bad.stderr
    flags = run_script(PROJECT, "train.py", "--hidden", "0", expect_code=2)
    assert "--hidden" in flags.stderr
    both = run_script(PROJECT, "train.py", "--text-file", "a", "--names-file", "b", expect_code=2)
    assert "not both" in both.stderr
    dropout = run_script(PROJECT, "train.py", "--dropout", "1", expect_code=2)
    assert dropout.stderr.startswith("error: --dropout must be below 1")


def test_text_batches_continue_each_stream_from_one_window_to_the_next():
    ids = np.arange(101)
    batches = TextBatches(ids, batch_size=4, seq_len=5)
    x0, y0 = batches.window(0)
    x1, _ = batches.window(1)
    np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)  # row b picks up where it stopped
    np.testing.assert_array_equal(y0, x0 + 1)  # targets are the next characters


def test_names_are_framed_by_start_and_end_tokens_and_padding_is_ignored():
    vocab = Vocabulary("\nabc")
    x, y = pad_names(["ab", "c"], vocab)
    assert vocab.decode(x[0]) == "\nab" and vocab.decode(y[0]) == "ab\n"
    assert list(y[1]) == [vocab.index["c"], vocab.index["\n"], -1]


def test_bigram_baseline_of_a_deterministic_cycle_is_near_zero_and_unigram_is_log_3():
    ids = np.tile([0, 1, 2], 2000)
    unigram, bigram = unigram_bigram_losses(ids, ids, 3)
    assert abs(unigram - np.log(3)) < 1e-3 and bigram < 1e-2


def test_a_tiny_lstm_overfits_a_short_text():
    vocab = Vocabulary("hello world, hello rnn\n")
    ids = vocab.encode("hello world, hello rnn\n" * 4)
    x, y = ids[None, :-1], ids[None, 1:]
    model = CharRNN(ModelConfig(len(vocab), "lstm", 8, 32, 1, "float64"), np.random.default_rng(0))
    optimizer = Adam(model.named_params(), model.named_grads(), lr=0.02)
    for _ in range(150):
        loss = model.forward(x, y)[1]
        model.backward()
        clip_grad_norm(list(model.named_grads().values()), 5.0)
        optimizer.step()
    assert loss < 0.05  # from log(V) = 2.3 nats to nearly memorised


def test_bench_prints_its_ratio_as_json_on_the_last_line():
    out = run_script(PROJECT, "bench.py", "--hidden", "8", "--seq-len", "4", "--repeats", "1")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["project"] == "rnn" and report["ratios"]["lstm_train_step_ours_over_torch"] > 0


def test_compare_dry_run_writes_both_figures(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be, that is the question. " * 100)
    run_script(PROJECT, "compare.py", "--dry-run", "--text-file", text, "--out", tmp_path / "cmp")
    for name in ["val_loss.png", "gradient_through_time.png", "metrics.json"]:
        assert (tmp_path / "cmp" / name).exists(), name
    for cell in ["rnn", "lstm", "gru"]:
        assert (tmp_path / "cmp" / cell / "model.npz").exists()
