"""Train the Transformer: English -> French characters, or (--task classify) five topics.

    python train.py                                  # generated pairs, ~2.5 minutes on one CPU core
    python train.py --pairs-file fra.txt             # real English<TAB>French sentence pairs
    python train.py --dataset eng-fra --data-dir DIR # the standard file, downloaded once
    python train.py --task classify                  # encoder-only topic classifier
    python train.py --task classify --csv news.csv   # label,text rows

The recipe is the paper's (section 5): teacher forcing, cross-entropy with label smoothing,
Adam (beta2 0.98, eps 1e-9) with the warm-up schedule lr = d^-0.5 min(s^-0.5, s w^-1.5),
and (not in the paper, cheap insurance) gradient clipping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from data import (
    TOPICS,
    CharVocab,
    eng_fra_file,
    generated_pairs,
    generated_topics,
    read_labelled_csv,
    read_pairs_file,
    split_pairs,
)
from model import Seq2SeqTransformer, TransformerClassifier, TransformerConfig

from shared.checkpoint import atomic_write_text, load_checkpoint, load_model_state, save_checkpoint
from shared.cli import RunConfig, arg, cli_main
from shared.errors import CheckpointError, UserError
from shared.logging import latest_run, progress, read_log, start_run
from shared.plots import plot_curves, save_figure
from shared.runtime import get_device, seed_everything, set_threads

PROJECT_DIR = Path(__file__).parent
CHECKPOINT = "model.pt"
MUST_MATCH_ON_RESUME = ("task", "dataset", "pairs_file", "csv", "d_model", "n_head", "d_ff")


@dataclass
class TrainConfig(RunConfig):
    task: str = arg(
        "translate",
        "translate (encoder-decoder) or classify (encoder only)",
        choices=("translate", "classify"),
    )
    dataset: str = arg(
        "generated",
        "translation pairs: generated (offline) or eng-fra (downloaded to --data-dir)",
        choices=("generated", "eng-fra"),
    )
    pairs_file: str = arg("", "English<TAB>French lines to translate instead of --dataset")
    csv: str = arg("", "label,text rows to classify instead of the generated topics")
    max_chars: int = arg(60, "longest sentence kept from a real file, in characters", min=1)
    # model (TransformerConfig)
    d_model: int = arg(64, "width of every position's vector", min=1)
    n_head: int = arg(4, "attention heads (a divisor of --d-model)", min=1)
    d_ff: int = arg(256, "hidden width of the feed-forward network", min=1)
    n_encoder_layers: int = arg(2, "encoder layers", min=1)
    n_decoder_layers: int = arg(2, "decoder layers", min=1)
    dropout: float = arg(
        0.0, "dropout probability (the paper: 0.1; costs a third of a CPU step)", min=0, max=0.99
    )
    norm_first: bool = arg(False, "pre-norm instead of the paper's post-norm")
    positional: str = arg("sinusoidal", "positional encoding", choices=("sinusoidal", "learned"))
    share_embeddings: bool = arg(True, "one table for source, target and output projection")
    fused_attention: bool = arg(False, "use F.scaled_dot_product_attention (tested equal)")
    # optimisation (1,200 steps of 64 pairs: about 2.5 minutes on one CPU core)
    batch_size: int = arg(64, "sentence pairs per step", min=1)
    max_iters: int = arg(1200, "optimizer steps", min=1)
    warmup_iters: int = arg(200, "steps of warm-up in the paper's schedule", min=1)
    lr_scale: float = arg(
        1.0, "factor on the paper's learning-rate schedule", min=0, min_inclusive=False
    )
    label_smoothing: float = arg(0.1, "label smoothing epsilon", min=0, max=0.99)
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: no clipping)", min=0)
    average_last: int = arg(
        200, "the final model averages the weights of the last N steps (0: the last weights)",
        min=0,
    )  # fmt: skip
    # evaluation, speed
    eval_interval: int = arg(400, "steps between evaluations and checkpoints", min=1)
    eval_size: int = arg(1000, "held-out examples decoded at each evaluation", min=1)
    # A model this small gains little from a second thread, and when the other core is busy
    # threads that spin waiting for each other lose a lot (measured here with another job
    # running: 186 ms per step with one thread, 1.1 to 2.9 s with two).
    threads: int = arg(1, "torch CPU threads (0: torch's default, one per core)", min=0)

    def check(self):
        if self.d_model % self.n_head:
            raise UserError(f"--d-model {self.d_model} is not a multiple of --n-head {self.n_head}")
        if self.d_model % 2:
            raise UserError(f"--d-model {self.d_model} must be even (sine and cosine pairs)")


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A tiny model and a few steps of every stage."""
    return dataclasses.replace(
        cfg, d_model=16, n_head=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
        batch_size=8, max_iters=min(cfg.max_iters, 4), warmup_iters=2, eval_interval=2,
        eval_size=8, average_last=min(cfg.average_last, 2),
    )  # fmt: skip


def noam_lr(step: int, d_model: int, warmup: int, scale: float = 1.0) -> float:
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)   (paper, equation 3).

    Linear growth for `warmup` steps, then decay as 1/sqrt(step); step counts from 1.
    """
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


@torch.no_grad()
def update_average(average: dict, state: dict, n: int) -> None:
    """Running mean: after the n-th state, average = (state_1 + ... + state_n) / n, in place.

    mean_n = mean_{n-1} + (x_n - mean_{n-1}) / n, so no sum of n weight sets is ever held."""
    for name, value in state.items():
        if value.is_floating_point():
            average[name] += (value - average[name]) / n


# ----------------------------------------------------------------------------- metrics


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(hypotheses: list[str], references: list[str]) -> float:
    """Edits needed, summed over the corpus, per reference character."""
    edits = sum(edit_distance(h, r) for h, r in zip(hypotheses, references))
    return edits / max(1, sum(len(r) for r in references))


def corpus_bleu(hypotheses: list[str], references: list[str], max_n: int = 4) -> float:
    """BLEU (Papineni et al., 2002) on words, 0-100: BP * exp(mean_n log p_n), p_n the clipped
    n-gram precision over the corpus, BP = min(1, exp(1 - ref_len / hyp_len))."""
    import math
    from collections import Counter

    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, max_n + 1):
            h_grams = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            r_grams = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, r_grams[g]) for g, c in h_grams.items())
            totals[n - 1] += max(0, len(h) - n + 1)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = min(0.0, 1.0 - ref_len / hyp_len)
    return 100.0 * math.exp(brevity + log_precision)


# ----------------------------------------------------------------------------- batches


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """The examples of step `step`, drawn from a generator seeded by (seed, step): a resumed
    run sees exactly the batches the uninterrupted run would have seen."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (batch_size,), generator=g).tolist()


def pad_batch(sequences: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """Lists of ids -> (B, L) padded with pad_id to the longest."""
    L = max(len(s) for s in sequences)
    return torch.tensor([s + [pad_id] * (L - len(s)) for s in sequences], device=device)


def translation_batch(pairs, vocab: CharVocab, device):
    """src (B, S); decoder input bos + target (B, T); targets target + eos (B, T)."""
    src = pad_batch([vocab.encode(en) for en, _ in pairs], vocab.pad_id, device)
    tgt = [vocab.encode(fr) for _, fr in pairs]
    tgt_in = pad_batch([[vocab.bos_id, *t] for t in tgt], vocab.pad_id, device)
    tgt_out = pad_batch([[*t, vocab.eos_id] for t in tgt], vocab.pad_id, device)
    return src, tgt_in, tgt_out


def translate_batch(model, sentences: list[str], vocab: CharVocab, device) -> list[str]:
    src = pad_batch([vocab.encode(s) for s in sentences], vocab.pad_id, device)
    tokens, _ = model.greedy_decode(src, max_len=model.cfg.max_len - 1)
    return [vocab.decode(row.tolist()) for row in tokens]


@torch.no_grad()
def evaluate_translation(model, pairs, vocab, device, batch_size: int = 250) -> dict:
    model.eval()
    hypotheses = []
    for i in range(0, len(pairs), batch_size):
        chunk = [en for en, _ in pairs[i : i + batch_size]]
        hypotheses += translate_batch(model, chunk, vocab, device)
    model.train()
    references = [fr for _, fr in pairs]
    return {
        "exact_match": sum(h == r for h, r in zip(hypotheses, references)) / len(pairs),
        "cer": character_error_rate(hypotheses, references),
        "bleu": corpus_bleu(hypotheses, references),
        "hypotheses": hypotheses,
    }


@torch.no_grad()
def evaluate_classifier(model, items, vocab, device, batch_size: int = 250) -> dict:
    model.eval()
    correct = 0
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        tokens = pad_batch([vocab.encode(t) for t, _ in chunk], vocab.pad_id, device)
        predicted = model(tokens)[0].argmax(dim=-1).tolist()
        correct += sum(p == label for p, (_, label) in zip(predicted, chunk))
    model.train()
    return {"accuracy": correct / len(items)}


# ----------------------------------------------------------------------------- figures


def write_curves(run_path: Path, score_name: str) -> None:
    """loss.png (per step) and score.png (held-out, per evaluation) from log.jsonl."""
    loss, score = {}, {}
    for record in read_log(run_path):
        if "loss" in record:
            loss[record["step"]] = record["loss"]
        if score_name in record:
            score[record["step"]] = record[score_name]
    plot_curves(
        run_path / "loss.png",
        {"train": (sorted(loss), [loss[s] for s in sorted(loss)])},
        ylabel="label-smoothed cross-entropy" if score_name == "exact_match" else "cross-entropy",
    )
    plot_curves(
        run_path / "score.png",
        {"held-out": (sorted(score), [score[s] for s in sorted(score)])},
        ylabel=score_name.replace("_", " "),
    )


def _heatmap(ax, weights, xlabels, ylabels, title):
    ax.imshow(weights, cmap="viridis", vmin=0, aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=6)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=6)
    ax.set_title(title, fontsize=9)


@torch.no_grad()
def write_attention_maps(model, vocab, source: str, path: Path, device) -> None:
    """Last-layer weights averaged over heads: encoder self, decoder self, and cross-attention
    (which source characters each generated character reads)."""
    import matplotlib.pyplot as plt

    # The fused kernel returns no weights: draw them with the hand-written path (tested equal).
    fused = [m for m in model.modules() if getattr(m, "fused", False)]
    for module in fused:
        module.fused = False
    model.eval()
    src = torch.tensor([vocab.encode(source)], device=device)
    src_labels = list(source.replace(" ", "_"))
    if isinstance(model, TransformerClassifier):
        x = model.embed(src) * model.cfg.d_model**0.5 + model.positional(src.size(1))
        _, enc_w = model.encoder(x)
        fig, ax = plt.subplots(figsize=(6, 5))
        _heatmap(ax, enc_w[-1][0].mean(0).cpu(), src_labels, src_labels, "encoder self-attention")
    else:
        tokens, _ = model.greedy_decode(src, max_len=model.cfg.max_len - 1)
        tgt_in = torch.cat([torch.tensor([[vocab.bos_id]], device=device), tokens[:, :-1]], 1)
        memory, src_mask, enc_w = model.encode(src)
        _, self_w, cross_w = model.decode(tgt_in, memory, src_mask)
        out_labels = [vocab.itos[t] if t > 2 else "</s>" for t in tokens[0].tolist()]
        out_labels = [c.replace(" ", "_") for c in out_labels]
        in_labels = ["<s>", *out_labels[:-1]]
        fig, axes = plt.subplots(1, 3, figsize=(18, 6))
        _heatmap(axes[0], enc_w[-1][0].mean(0).cpu(), src_labels, src_labels, "encoder self")
        _heatmap(axes[1], self_w[-1][0].mean(0).cpu(), in_labels, out_labels, "decoder self")
        _heatmap(axes[2], cross_w[-1][0].mean(0).cpu(), src_labels, out_labels, "cross")
        axes[2].set_xlabel("English (keys)")
        axes[2].set_ylabel("French being written (queries)")
    model.train()
    for module in fused:
        module.fused = True
    save_figure(fig, path)


# ----------------------------------------------------------------------------- main


def load_data(cfg: TrainConfig):
    """(train, test, vocabulary texts, label names): pairs for translation, items for topics."""
    if cfg.task == "classify":
        if cfg.csv:
            items, labels = read_labelled_csv(cfg.csv)
        else:
            items, labels = generated_topics(), list(TOPICS)
        train, test = split_pairs(items)
        return train, test, [t for t, _ in items], labels
    if cfg.pairs_file:
        pairs = read_pairs_file(cfg.pairs_file, cfg.max_chars)
    elif cfg.dataset == "eng-fra":
        pairs = read_pairs_file(eng_fra_file(cfg.data_dir), cfg.max_chars)
    else:
        pairs = generated_pairs()
    train, test = split_pairs(pairs)
    return train, test, [s for pair in pairs for s in pair], []


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = get_device(cfg.device)

    # 1. Data: a fixed held-out split and one character vocabulary for everything. Read before
    # the run folder is made, so a missing file leaves runs/latest where it was.
    train, test, texts, labels = load_data(cfg)
    test = test[: cfg.eval_size]
    vocab = CharVocab.build(texts)
    task = "transformer translation" if cfg.task == "translate" else "transformer classification"
    ckpt = None
    if cfg.resume:  # the checkpoint before the run folder: a mismatch must not touch it
        checkpoint_path = (Path(cfg.out) if cfg.out else latest_run(PROJECT_DIR)) / CHECKPOINT
        ckpt = load_checkpoint(checkpoint_path, required=("model", "optimizer", "step"))
        for name in MUST_MATCH_ON_RESUME:
            if ckpt["train_config"][name] != getattr(cfg, name):
                flag = "--" + name.replace("_", "-")
                raise CheckpointError(
                    f"checkpoint {checkpoint_path} was trained with {flag} "
                    f"{ckpt['train_config'][name]!r}, not {getattr(cfg, name)!r}"
                )
    run = start_run(task, cfg, PROJECT_DIR)
    checkpoint_path = run.path / CHECKPOINT

    # 2. The model and Adam with the paper's betas and epsilon (5.3).
    translate = cfg.task == "translate"
    model_config = TransformerConfig(
        vocab_size=len(vocab),
        max_len=max(len(t) for t in texts) + 2,  # + bos / eos
        d_model=cfg.d_model,
        n_head=cfg.n_head,
        d_ff=cfg.d_ff,
        n_encoder_layers=cfg.n_encoder_layers,
        n_decoder_layers=cfg.n_decoder_layers if translate else 0,
        dropout=cfg.dropout,
        norm_first=cfg.norm_first,
        positional=cfg.positional,
        share_embeddings=cfg.share_embeddings,
        fused_attention=cfg.fused_attention,
        n_classes=0 if translate else len(labels),
        pad_id=vocab.pad_id,
    )
    if translate:
        model = Seq2SeqTransformer(model_config, vocab.bos_id, vocab.eos_id).to(device)
    else:
        model = TransformerClassifier(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    # The paper's models average their last checkpoints (6.1); here the running mean of the
    # weights over the last `average_last` steps, which smooths away the noise of the final
    # steps at a still-high learning rate.
    average, n_averaged = {k: v.detach().clone() for k, v in model.state_dict().items()}, 0
    start_step = 0
    if ckpt is not None:
        load_model_state(model, ckpt.get("train_model", ckpt["model"]), checkpoint_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        average = {k: v.to(device) for k, v in ckpt.get("average", average).items()}
        n_averaged = ckpt.get("n_averaged", 0)
        if ckpt["step"] <= cfg.max_iters - cfg.average_last:
            n_averaged = 0  # a longer run: its averaging window has not begun yet
        torch.set_rng_state(ckpt["rng_state"])
        start_step = ckpt["step"]
        print(f"resuming {checkpoint_path} at step {start_step}")
    print(
        f"{model.num_params():,} parameters, {len(vocab)} characters, "
        f"{len(train):,} training and {len(test):,} held-out examples"
    )

    def save(step: int, train_model: dict | None = None) -> None:
        """`model` is what inference.py loads; `train_model`, when given, the weights training
        continues from on --resume (the last ones, after the final model became the average)."""
        save_checkpoint(
            checkpoint_path,
            {
                "task": cfg.task,
                "model": model.state_dict(),
                **({"train_model": train_model} if train_model is not None else {}),
                "average": average,
                "n_averaged": n_averaged,
                "optimizer": optimizer.state_dict(),
                "model_config": dataclasses.asdict(model_config),
                "train_config": dataclasses.asdict(cfg),
                "chars": vocab.chars,
                "labels": labels,
                "examples": [x for x, _ in test[:5]],
                "step": step,
                "rng_state": torch.get_rng_state(),
            },
        )

    def evaluate() -> dict:
        if translate:
            return evaluate_translation(model, test, vocab, device)
        return evaluate_classifier(model, test, vocab, device)

    # 3. Training: teacher forcing, label smoothing, warm-up schedule, clipping.
    score_name = "exact_match" if translate else "accuracy"
    result = None
    for step in progress(range(start_step, cfg.max_iters), desc="train"):
        lr = noam_lr(step + 1, cfg.d_model, cfg.warmup_iters, cfg.lr_scale)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = [train[i] for i in batch_indices(step, cfg.batch_size, len(train), cfg.seed)]
        if translate:
            src, tgt_in, tgt_out = translation_batch(batch, vocab, device)
            _, loss = model(src, tgt_in, tgt_out, label_smoothing=cfg.label_smoothing)
        else:
            tokens = pad_batch([vocab.encode(t) for t, _ in batch], vocab.pad_id, device)
            _, loss = model(tokens, torch.tensor([y for _, y in batch], device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if step >= cfg.max_iters - cfg.average_last:
            n_averaged += 1
            update_average(average, model.state_dict(), n_averaged)
        run.log(step=step + 1, loss=loss.item(), lr=lr)
        if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.max_iters:
            result = evaluate()
            run.log(step=step + 1, **{k: v for k, v in result.items() if k != "hypotheses"})
            shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "hypotheses")
            print(f"step {step + 1}: loss {loss.item():.4f}, {shown}")
            save(step + 1)

    # 4. Final numbers (with the averaged weights, if any; a resumed run that was already done
    # evaluates once more), figures and examples.
    extra = {}
    if n_averaged > 0:
        last_weights = {k: v.clone() for k, v in model.state_dict().items()}
        if result is not None:
            extra[f"last_weights_{score_name}"] = result[score_name]
        model.load_state_dict(average)
        result = evaluate()
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "hypotheses")
        print(f"weights averaged over the last {n_averaged} steps: {shown}")
        run.log(step=cfg.max_iters, averaged_steps=n_averaged,
                **{f"averaged_{k}": v for k, v in result.items() if k != "hypotheses"})  # fmt: skip
        save(cfg.max_iters, train_model=last_weights)
    elif result is None:
        result = evaluate()
    write_curves(run.path, score_name)
    example = test[0][0]
    write_attention_maps(model, vocab, example, run.path / "attention.png", device)
    if translate:
        lines = [
            f"{en}\n  -> {hyp}{'' if hyp == fr else f'   (expected: {fr})'}"
            for (en, fr), hyp in zip(test, result["hypotheses"])
        ]
        wrong = [line for line in lines if "(expected: " in line]
        atomic_write_text(
            run.path / "examples.txt",
            "\n".join(lines[:20])
            + f"\n\nevery wrong held-out translation ({len(wrong)} of {len(lines)}):\n"
            + "\n".join(wrong)
            + "\n",
        )
        print("\n".join(lines[:5]))
        extra.update(cer=result["cer"], bleu=result["bleu"])
    return run.finish(
        metric=score_name,
        value=result[score_name],
        higher_is_better=True,
        **extra,
        params=model.num_params(),
        steps=cfg.max_iters,
        averaged_steps=n_averaged,
        held_out=len(test),
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
