"""Train a character-level RNN, LSTM or GRU, written in NumPy, on text or on names.

    python train.py                                   # LSTM on the embedded stdlib corpus
    python train.py --cell gru --dataset shakespeare --data-dir /work/shared/data
    python train.py --text-file my.txt                # any UTF-8 text file
    python train.py --names-file names.txt            # a name generator (one name per line)

Text is learned with truncated BPTT: B parallel streams, windows of --seq-len characters, the
hidden state carried from one window to the next. Names are learned one per sequence with full
BPTT. Writes model.npz, metrics.json, log.jsonl, loss.png and samples.txt to the run folder.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from data import (
    BOUNDARY,
    TextBatches,
    Vocabulary,
    pad_names,
    sample_names,
    sample_text,
    unigram_bigram_losses,
)
from inference import load_model
from model import CELLS, Adam, CharRNN, ModelConfig, clip_grad_norm
from threadpoolctl import threadpool_limits

from shared.checkpoint import save_arrays
from shared.cli import RunConfig, arg, cli_main
from shared.data import load_names, load_text, split_text
from shared.errors import CheckpointError, UserError
from shared.logging import progress, start_run
from shared.plots import plot_curves
from shared.runtime import seed_everything

HERE = Path(__file__).parent
CHECKPOINT = "model.npz"


@dataclass
class TrainConfig(RunConfig):
    dataset: str = arg("stdlib", "text corpus", choices=("stdlib", "shakespeare", "names"))
    text_file: str = arg("", "train on this UTF-8 text file instead of --dataset")
    names_file: str = arg("", "train a name generator on this file (one name per line)")
    cell: str = arg("lstm", "recurrent cell", choices=CELLS)
    n_embd: int = arg(64, "character embedding width", min=1)
    hidden: int = arg(128, "hidden state width of each recurrent layer", min=1)
    n_layer: int = arg(1, "stacked recurrent layers", min=1)
    batch_size: int = arg(32, "sequences per step", min=1)
    seq_len: int = arg(64, "characters per window: the truncated BPTT length", min=1)
    lr: float = arg(3e-3, "Adam learning rate", min=0, min_inclusive=False)
    grad_clip: float = arg(5.0, "clip the global gradient norm to this", min=0, min_inclusive=False)
    max_steps: int = arg(1500, "training steps", min=1)
    time_budget: float = arg(
        120.0, "stop after this many seconds of training and validation (0: none)", min=0
    )
    eval_interval: int = arg(100, "steps between validation losses", min=1)
    eval_chars: int = arg(
        32768, "text characters scored at each evaluation (all at the end)", min=1
    )
    checkpoint_interval: int = arg(200, "steps between checkpoints (for --resume)", min=1)
    sample_length: int = arg(600, "characters sampled at the end (names: 20 names)", min=1)
    temperature: float = arg(0.8, "sampling temperature", min=0, min_inclusive=False)
    threads: int = arg(1, "BLAS threads; 1 is fastest for the small per-step products", min=1)

    def check(self):
        if self.text_file and (self.names_file or self.dataset == "names"):
            raise UserError("give --text-file or names (--names-file, --dataset names), not both")
        if self.device not in ("auto", "cpu"):
            raise UserError(f"this NumPy project runs on the CPU only, got --device {self.device}")


@dataclass
class Corpus:
    mode: str  # "text" (one long stream) or "names" (one sequence per name)
    vocab: Vocabulary
    train: object  # text: int ids; names: list of names
    val: object
    name: str


def load_corpus(cfg: TrainConfig) -> Corpus:
    """The text (90/10 split, in order) or the names (shuffled by seed, 90/10 split)."""
    if cfg.names_file or cfg.dataset == "names":
        names = load_names(path=cfg.names_file or None, data_dir=cfg.data_dir)
        names = [names[i] for i in np.random.default_rng(cfg.seed).permutation(len(names))]
        if cfg.dry_run:
            names = names[:500]
        cut = max(1, int(0.9 * len(names)))
        vocab = Vocabulary(BOUNDARY + "".join(names))
        return Corpus(
            "names", vocab, names[:cut], names[cut:] or names[:1], cfg.names_file or "names"
        )
    text = load_text(cfg.text_file or cfg.dataset, data_dir=cfg.data_dir)
    if cfg.dry_run:
        text = text[:20_000]
    vocab = Vocabulary(text)  # every character of the corpus, so validation has no unknowns
    train_text, val_text = split_text(text, val_fraction=0.1)
    return Corpus(
        "text",
        vocab,
        vocab.encode(train_text),
        vocab.encode(val_text),
        cfg.text_file or cfg.dataset,
    )


def baselines(corpus: Corpus) -> tuple[float, float]:
    """Unigram and bigram validation losses; for names, over the boundary-joined stream."""
    if corpus.mode == "text":
        return unigram_bigram_losses(corpus.train, corpus.val, len(corpus.vocab))

    def stream(names):  # "\nemma\nolivia\n...": every start and end token counted once
        return corpus.vocab.encode(BOUNDARY + "".join(name + BOUNDARY for name in names))

    return unigram_bigram_losses(stream(corpus.train), stream(corpus.val), len(corpus.vocab))


def evaluate(model: CharRNN, corpus: Corpus, val_batches, max_chars: int | None = None) -> float:
    """Mean validation loss in nats per character; text: about max_chars of it (None: all)."""
    if corpus.mode == "text":  # windows in order, state carried, as in training
        chars_per_window = val_batches.inputs.shape[0] * val_batches.seq_len
        n = val_batches.n_windows
        if max_chars is not None:
            n = min(n, max(1, max_chars // chars_per_window))
        state, total = None, 0.0
        for k in range(n):
            x, y = val_batches.window(k)
            _, loss, state = model.forward(x, y, state)
            total += loss
        return total / n
    total, count = 0.0, 0
    for x, y in val_batches:
        n = int((y >= 0).sum())
        total += model.forward(x, y)[1] * n
        count += n
    return total / count


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:  # a tiny model and a few steps of every stage
        cfg = dataclasses.replace(
            cfg, n_embd=8, hidden=16, batch_size=4, seq_len=16, max_steps=6, eval_interval=3,
            checkpoint_interval=3, sample_length=60, time_budget=0,
        )  # fmt: skip
    with threadpool_limits(cfg.threads):  # many tiny matrix products: threads only add overhead
        return train(cfg)


def train(cfg: TrainConfig) -> dict:
    rng = seed_everything(cfg.seed)
    corpus = load_corpus(cfg)
    run = start_run(f"{cfg.cell} on {corpus.name}", cfg, HERE)
    vocab = corpus.vocab
    model_config = ModelConfig(len(vocab), cfg.cell, cfg.n_embd, cfg.hidden, cfg.n_layer)
    model = CharRNN(model_config, rng)
    optimizer = Adam(model.named_params(), model.named_grads(), cfg.lr)
    grads = list(model.named_grads().values())
    unigram_loss, bigram_loss = baselines(corpus)
    print(
        f"{corpus.name}: {len(vocab)} characters in the vocabulary; validation baselines "
        f"unigram {unigram_loss:.3f}, bigram {bigram_loss:.3f} nats/char"
    )

    if corpus.mode == "text":
        train_batches = TextBatches(corpus.train, cfg.batch_size, cfg.seq_len)
        val_batches = TextBatches(corpus.val, min(cfg.batch_size, 32), cfg.seq_len)
    else:
        val_batches = [
            pad_names(corpus.val[i : i + 256], vocab) for i in range(0, len(corpus.val), 256)
        ]

    history = {"step": [], "train_loss": [], "val_loss": []}
    step = 0
    checkpoint = run.path / CHECKPOINT
    if cfg.resume and checkpoint.exists():
        saved, arrays, meta = load_model(checkpoint)
        if meta["model"] != dataclasses.asdict(model_config) or meta["chars"] != vocab.chars:
            raise CheckpointError(f"checkpoint {checkpoint} was trained with other flags or data")
        model.load_params(saved.named_params())
        optimizer.load_state(arrays, meta["step"])
        step, history = meta["step"], meta["history"]  # the carried state restarts from zeros
        print(f"resuming from step {step} of {checkpoint}")

    def save():
        meta = {
            "model": dataclasses.asdict(model_config),
            "chars": vocab.chars,
            "mode": corpus.mode,
            "step": step,
            "history": history,
        }
        save_arrays(checkpoint, {**model.named_params(), **optimizer.state()}, meta)

    start, state, window_loss = time.time(), None, []
    bar = progress(range(step + 1, cfg.max_steps + 1), desc=f"train {cfg.cell}")
    for step in bar:  # step = steps done once this one is
        # 1. a batch: the next window of every stream (text) or random names
        if corpus.mode == "text":
            if (step - 1) % train_batches.n_windows == 0:
                state = None  # back at the start of the streams: nothing to carry over
            x, y = train_batches.window(step - 1)
        else:
            picked = rng.integers(0, len(corpus.train), cfg.batch_size)
            x, y = pad_names([corpus.train[i] for i in picked], vocab)
            state = None  # every name starts from zeros
        # 2. forward, carrying the state; backward stops at the window's start (truncated BPTT)
        _, loss, state = model.forward(x, y, state)
        model.backward()
        # 3. clip the global norm, then Adam
        grad_norm = clip_grad_norm(grads, cfg.grad_clip)
        optimizer.step()
        window_loss.append(loss)
        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            val_loss = evaluate(model, corpus, val_batches, cfg.eval_chars)
            train_loss = float(np.mean(window_loss))
            window_loss = []
            for key, value in [("step", step), ("train_loss", train_loss), ("val_loss", val_loss)]:
                history[key].append(value)
            run.log(step=step, train_loss=train_loss, val_loss=val_loss, grad_norm=grad_norm)
            bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
        out_of_time = cfg.time_budget > 0 and time.time() - start > cfg.time_budget
        if step % cfg.checkpoint_interval == 0 or out_of_time:
            save()
        if out_of_time:
            break
    if not history["step"] or history["step"][-1] != step:  # stopped by the time budget
        history["step"].append(step)
        history["train_loss"].append(float(np.mean(window_loss)))
        history["val_loss"].append(None)
    history["val_loss"][-1] = evaluate(model, corpus, val_batches)  # the final score: all of it
    save()

    # 4. figures and samples
    last = history["step"][-1]
    plot_curves(
        run.path / "loss.png",
        {
            "train": (history["step"], history["train_loss"]),
            "validation": (history["step"], history["val_loss"]),
            "unigram baseline": ([0, last], [unigram_loss] * 2),
            "bigram baseline": ([0, last], [bigram_loss] * 2),
        },
        ylabel="loss (nats per character)",
        title=f"{cfg.cell.upper()} on {corpus.name}",
    )
    sample_rng = np.random.default_rng(cfg.seed)
    if corpus.mode == "text":
        sample = sample_text(model, vocab, "", cfg.sample_length, sample_rng, cfg.temperature)
    else:
        sample = "\n".join(sample_names(model, vocab, "", 20, sample_rng, cfg.temperature))
    (run.path / "samples.txt").write_text(sample + "\n", encoding="utf-8")
    print(sample[:300])

    val_loss = history["val_loss"][-1]
    print(
        f"after {step} steps: train {history['train_loss'][-1]:.3f}, validation {val_loss:.3f} "
        f"nats/char ({val_loss / math.log(2):.3f} bits/char); bigram baseline {bigram_loss:.3f}"
    )
    return run.finish(
        metric="val_loss",
        value=val_loss,
        higher_is_better=False,
        val_bits_per_char=val_loss / math.log(2),
        train_loss=history["train_loss"][-1],
        unigram_val_loss=unigram_loss,
        bigram_val_loss=bigram_loss,
        steps=step,
        cell=cfg.cell,
        parameters=int(sum(p.size for p in model.named_params().values())),
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
