"""The figures and example files of a run: curves from log.jsonl, attention maps, translations."""

from __future__ import annotations

from pathlib import Path

import torch
from metrics import same_words
from model import TransformerClassifier

from shared.checkpoint import atomic_write_text
from shared.logging import read_log
from shared.plots import plot_curves, save_figure


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
    was_training = model.training
    model.eval()
    src = torch.tensor([vocab.encode(source)], device=device)
    src_labels = [vocab.itos[i].replace(" ", "_") for i in src[0].tolist()]
    if isinstance(model, TransformerClassifier):
        _, enc_w, _ = model.encode(src)
        fig, ax = plt.subplots(figsize=(6, 5))
        _heatmap(ax, enc_w[-1][0].mean(0).cpu(), src_labels, src_labels, "encoder self-attention")
    else:
        tokens, _ = model.greedy_decode(src, max_len=model.cfg.max_len - 1)
        tgt_in = torch.cat([torch.tensor([[vocab.bos_id]], device=device), tokens[:, :-1]], 1)
        memory, src_mask, enc_w = model.encode(src)
        _, self_w, cross_w = model.decode(tgt_in, memory, src_mask)
        out_labels = [vocab.itos[t] if t != vocab.eos_id else "</s>" for t in tokens[0].tolist()]
        out_labels = [c.replace(" ", "_") for c in out_labels]
        in_labels = ["<s>", *out_labels[:-1]]
        fig, axes = plt.subplots(1, 3, figsize=(18, 6))
        _heatmap(axes[0], enc_w[-1][0].mean(0).cpu(), src_labels, src_labels, "encoder self")
        _heatmap(axes[1], self_w[-1][0].mean(0).cpu(), in_labels, out_labels, "decoder self")
        _heatmap(axes[2], cross_w[-1][0].mean(0).cpu(), src_labels, out_labels, "cross")
        axes[2].set_xlabel("English (keys)")
        axes[2].set_ylabel("French being written (queries)")
    model.train(was_training)
    for module in fused:
        module.fused = True
    save_figure(fig, path)


def format_translations(test, hypotheses: list[str]) -> list[str]:
    """'english\\n  -> ours' per sentence, with the references beside every wrong one."""
    lines = []
    for (en, refs), hyp in zip(test, hypotheses, strict=True):
        expected = "" if same_words(hyp, refs) else f"   (expected: {' | '.join(refs)})"
        lines.append(f"{en}\n  -> {hyp}{expected}")
    return lines


def write_examples(path: Path, test, hypotheses: list[str], shown: int = 20) -> list[str]:
    """examples.txt: the first `shown` held-out translations, then every wrong one."""
    lines = format_translations(test, hypotheses)
    wrong = [line for line in lines if "(expected: " in line]
    atomic_write_text(
        path,
        "\n".join(lines[:shown])
        + f"\n\nevery wrong held-out translation ({len(wrong)} of {len(lines)}):\n"
        + "\n".join(wrong)
        + "\n",
    )
    return lines


@torch.no_grad()
def write_masked_predictions(model, windows: list[str], vocab, path: Path, device) -> None:
    """The language model at work: each held-out window three times, as written, as the model
    read it (15% of its characters selected, most hidden as a grey box), and the model's
    guess at each selected character (green when right, red when wrong)."""
    import matplotlib.pyplot as plt
    from data import pad_batch
    from model import mask_tokens

    was_training = model.training
    model.eval()
    tokens = pad_batch([vocab.encode(w) for w in windows], vocab.pad_id, device)
    generator = torch.Generator(device=device).manual_seed(0)
    corrupted, targets = mask_tokens(
        tokens, generator, vocab.first_id, vocab.bos_id, len(vocab), vocab.pad_id
    )
    predicted = model(corrupted)[0].argmax(-1)
    model.train(was_training)
    width = max(len(w) for w in windows)
    fig, ax = plt.subplots(figsize=(0.13 * width + 1, 0.75 * len(windows) + 0.5))
    ax.set_xlim(-0.5, width)
    ax.set_ylim(-0.7, 3 * len(windows))
    ax.axis("off")
    for row, window in enumerate(windows):
        y = 3 * (len(windows) - row) - 1
        for col in range(len(window)):
            chosen = bool(targets[row, col] != vocab.pad_id)
            seen = int(corrupted[row, col])
            ax.text(col, y, window[col], ha="center", family="monospace", fontsize=8)
            if seen == vocab.bos_id:
                ax.add_patch(plt.Rectangle((col - 0.4, y - 0.95), 0.8, 0.8, color="0.75"))
            else:
                ax.text(col, y - 0.8, vocab.itos[seen], ha="center", family="monospace",
                        fontsize=8, color="tab:orange" if chosen else "black")  # fmt: skip
            if chosen:
                guess = int(predicted[row, col])
                right = guess == int(targets[row, col])
                ax.text(col, y - 1.6, vocab.itos[guess] if guess >= vocab.first_id else "?",
                        ha="center", family="monospace", fontsize=8, weight="bold",
                        color="tab:green" if right else "tab:red")  # fmt: skip
    ax.set_title("held-out text / what the model read (grey: [MASK], orange: replaced or kept) / "
                 "its guess at each selected character", fontsize=8)  # fmt: skip
    save_figure(fig, path)
