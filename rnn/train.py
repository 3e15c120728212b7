"""Train a character-level RNN, LSTM or GRU, written in NumPy, on text or on names.

    python train.py                                   # LSTM on the embedded stdlib corpus
    python train.py --cell gru --dataset shakespeare --data-dir DATA
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
    unigram_bigram_losses,
)
from model import (
    CELLS,
    Adam,
    CharRNN,
    ModelConfig,
    clip_grad_norm,
    cosine_lr,
    training_bytes,
)
from report import plot_losses, write_samples
from threadpoolctl import threadpool_limits

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.data import load_names, load_text, split_text
from shared.errors import CheckpointError, UserError
from shared.logging import progress, start_run
from shared.runtime import check_fits_in_memory, seed_everything
from shared.state import TrainingState, load_for_resume

HERE = Path(__file__).parent
CHECKPOINT = "model.npz"
# flags that decide the data, the model or the batches: a resumed run must keep them
MUST_MATCH = ("dataset", "text_file", "names_file", "cell", "n_embd", "hidden", "n_layer")
MUST_MATCH += ("batch_size", "seq_len", "seed")


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "names": Preset(
            "makemore's 32,033 names (DATA/names/names.txt), an LSTM of width 256, dropout 0.25, "
            "20,000 steps, the learning rate decayed from 3e-3 to 3e-4 (cosine)",
            dict(
                dataset="names", cell="lstm", hidden=256, dropout=0.25, batch_size=32,
                lr_decay="cosine", lr=3e-3, min_lr=3e-4, max_steps=20_000, time_budget=1200.0,
                eval_interval=500, checkpoint_interval=500,
            ),
            anchor="makemore on names.txt: MLP 2.17, BatchNorm MLP 2.10, WaveNet 1.993 nats/char",
            report=("val_bits_per_char", "steps"),
        ),
        "shakespeare": Preset(
            "tiny Shakespeare (DATA/shakespeare/input.txt), a GRU of width 256, dropout 0.2, "
            "windows of 100, 6,000 steps, the learning rate decayed from 3e-3 to 3e-4 (cosine)",
            dict(
                dataset="shakespeare", cell="gru", hidden=256, dropout=0.2, batch_size=32,
                seq_len=100, lr_decay="cosine", lr=3e-3, min_lr=3e-4, max_steps=6_000,
                time_budget=1800.0, eval_interval=250, checkpoint_interval=500,
            ),
            anchor="char-rnn, a 3-layer LSTM of width 512 on tiny Shakespeare: 1.395 nats/char",
            report=("val_bits_per_char", "steps"),
        ),
    }  # fmt: skip
    dataset: str = arg("stdlib", "text corpus", choices=("stdlib", "shakespeare", "names"))
    text_file: str = arg("", "train on this UTF-8 text file instead of --dataset")
    names_file: str = arg("", "train a name generator on this file (one name per line, case kept)")
    cell: str = arg("lstm", "recurrent cell", choices=CELLS)
    n_embd: int = arg(64, "character embedding width", min=1)
    hidden: int = arg(128, "hidden state width of each recurrent layer", min=1)
    n_layer: int = arg(1, "stacked recurrent layers", min=1)
    dropout: float = arg(
        0.0, "probability of zeroing an input of a recurrent layer or of the output layer "
        "(training only; below 1)", min=0,
    )  # fmt: skip
    batch_size: int = arg(32, "sequences per step", min=1)
    seq_len: int = arg(64, "characters per window: the truncated BPTT length", min=1)
    lr: float = arg(
        3e-3, "Adam learning rate (of the first step with --lr-decay cosine)", min=0,
        min_inclusive=False,
    )  # fmt: skip
    lr_decay: str = arg(
        "none", "learning-rate schedule over --max-steps", choices=("none", "cosine")
    )
    min_lr: float = arg(3e-4, "the last step's learning rate with --lr-decay cosine", min=0)
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
        if self.dropout >= 1:
            raise UserError(
                f"--dropout must be below 1 (it keeps 1 - p of the inputs), got {self.dropout}"
            )
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
        if cfg.names_file:
            names = load_names(cfg.names_file, lower=False)  # spelled as in the file
        else:
            names = load_names(data_dir=cfg.data_dir)  # makemore's names.txt, all lower case
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


def make_batches(corpus: Corpus, cfg: TrainConfig):
    """Text: (B, T) windows of the training and validation streams. Names: the validation
    names in padded batches of 256 (training draws random names at every step instead)."""
    if corpus.mode == "text":
        train_batches = TextBatches(corpus.train, cfg.batch_size, cfg.seq_len)
        return train_batches, TextBatches(corpus.val, min(cfg.batch_size, 32), cfg.seq_len)
    val = corpus.val
    return None, [pad_names(val[i : i + 256], corpus.vocab) for i in range(0, len(val), 256)]


def next_batch(corpus: Corpus, train_batches, cfg: TrainConfig, step: int, rng, carried):
    """Step's inputs and targets, each (B, T), and the state to start it from: the next window
    of every stream with the carried state (text), or random names from zeros (names)."""
    if corpus.mode == "text":
        if (step - 1) % train_batches.n_windows == 0:
            carried = None  # back at the start of the streams: nothing to carry over
        x, y = train_batches.window(step - 1)
        return x, y, carried
    picked = rng.integers(0, len(corpus.train), cfg.batch_size)
    x, y = pad_names([corpus.train[i] for i in picked], corpus.vocab)
    return x, y, None  # every name starts from zeros


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """--lr at every step, or (--lr-decay cosine) falling from --lr to --min-lr by the last."""
    if cfg.lr_decay == "cosine":
        return cosine_lr(step, cfg.max_steps, cfg.lr, cfg.min_lr)
    return cfg.lr


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
            cfg, n_embd=8, hidden=16, batch_size=4, seq_len=16, max_steps=6, eval_interval=1,
            checkpoint_interval=3, sample_length=60, time_budget=0,
        )  # fmt: skip
    with threadpool_limits(cfg.threads):  # many tiny matrix products: threads only add overhead
        return train(cfg)


def build_model(cfg: TrainConfig, vocab_size: int, rng: np.random.Generator) -> CharRNN:
    """The network the flags describe, once an estimate of its memory says it fits."""
    config = ModelConfig(
        vocab_size, cfg.cell, cfg.n_embd, cfg.hidden, cfg.n_layer, dropout=cfg.dropout
    )
    check_fits_in_memory(
        training_bytes(config, cfg.batch_size, cfg.seq_len),
        f"--hidden {cfg.hidden} --n-layer {cfg.n_layer} --batch-size {cfg.batch_size}",
    )
    return CharRNN(config, rng)


def train(cfg: TrainConfig) -> dict:
    rng = seed_everything(cfg.seed)
    corpus = load_corpus(cfg)
    ckpt = load_for_resume(cfg, HERE, CHECKPOINT, must_match=MUST_MATCH)
    run = start_run(f"{cfg.cell} on {corpus.name}", cfg, HERE)
    vocab = corpus.vocab
    model = build_model(cfg, len(vocab), rng)
    optimizer = Adam(model.named_params(), model.named_grads(), cfg.lr)
    grads = list(model.named_grads().values())
    unigram_loss, bigram_loss = baselines(corpus)
    print(
        f"{corpus.name}: {len(vocab)} characters in the vocabulary; validation baselines "
        f"unigram {unigram_loss:.3f}, bigram {bigram_loss:.3f} nats/char"
    )

    train_batches, val_batches = make_batches(corpus, cfg)

    # everything the next step depends on: weights, Adam's moments, the generator that picks
    # names, the hidden state carried between windows, and the losses since the last log line
    parts = dict(model=model, optimizer=optimizer, data_rng=rng)
    state = TrainingState(run.path / CHECKPOINT, cfg, **parts)
    step = state.restore(ckpt)
    if ckpt is not None:
        if ckpt["chars"] != vocab.chars:
            raise CheckpointError(f"checkpoint {ckpt['path']} was trained on other characters")
        print(f"resuming from step {step} of {ckpt['path']}")
    history = state.extra.get("history", {"step": [], "train_loss": [], "val_loss": []})
    carried, window_loss = state.extra.get("carried"), state.extra.get("window_loss", [])

    def save():
        state.save(
            step,
            model_config=dataclasses.asdict(model.config),
            chars=vocab.chars,
            mode=corpus.mode,
            history=history,
            carried=carried,
            window_loss=window_loss,
        )

    start = time.time()
    bar = progress(range(step + 1, cfg.max_steps + 1), desc=f"train {cfg.cell}")
    for step in bar:  # step = steps done once this one is
        # 1. a batch: the next window of every stream (text) or random names
        x, y, carried = next_batch(corpus, train_batches, cfg, step, rng, carried)
        # 2. forward (dropout masks from rng), carrying the state; backward stops at the
        # window's start (truncated BPTT)
        _, loss, carried = model.forward(x, y, carried, dropout_rng=rng)
        model.backward()
        # 3. clip the global norm, then Adam at this step's learning rate
        grad_norm = clip_grad_norm(grads, cfg.grad_clip)
        optimizer.lr = learning_rate(cfg, step)
        optimizer.step()
        window_loss.append(float(loss))
        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            val_loss = evaluate(model, corpus, val_batches, cfg.eval_chars)
            train_loss = float(np.mean(window_loss))
            window_loss = []
            for key, value in [("step", step), ("train_loss", train_loss), ("val_loss", val_loss)]:
                history[key].append(value)
            run.log(
                step=step, train_loss=train_loss, val_loss=val_loss, grad_norm=grad_norm,
                lr=optimizer.lr,
            )  # fmt: skip
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

    return finish(run, cfg, corpus, model, history, (unigram_loss, bigram_loss))


def finish(run, cfg: TrainConfig, corpus: Corpus, model: CharRNN, history: dict, ngram) -> dict:
    """Figures, samples, the summary line and metrics.json of a finished run."""
    unigram_loss, bigram_loss = ngram
    title = f"{cfg.cell.upper()} on {corpus.name}"
    plot_losses(run.path / "loss.png", history, ngram, title)
    sample = write_samples(
        run.path / "samples.txt", model, corpus.vocab, corpus.mode, cfg.sample_length,
        cfg.temperature, cfg.seed,
    )  # fmt: skip
    print(sample[:300])

    step, val_loss = history["step"][-1], history["val_loss"][-1]
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
