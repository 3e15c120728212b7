"""Train the Transformer: English -> French characters, five topics, or masked characters.

    python train.py                                  # generated pairs, ~3 minutes on one CPU core
    python train.py --pairs-file fra.txt             # real English<TAB>French sentence pairs
    python train.py --preset tatoeba --data-dir DATA # DATA/eng-fra/eng-fra.txt
    python train.py --task classify                  # encoder-only topic classifier
    python train.py --task classify --csv news.csv   # label,text rows
    python train.py --task mlm --out runs/mlm        # BERT-style pre-training of the encoder
    python train.py --task classify --init-from runs/mlm/model.pt   # ... then fine-tuning
    torchrun --standalone --nproc_per_node 2 train.py                # two processes, one batch

The recipe is the paper's (section 5): teacher forcing, cross-entropy with label smoothing,
Adam (beta2 0.98, eps 1e-9) with the warm-up schedule lr = d^-0.5 min(s^-0.5, s w^-1.5),
and (not in the paper, cheap insurance) gradient clipping. Under torchrun every process draws
the same global batch of step s (a generator seeded by (seed, s)) and trains on its own slice
of it; DistributedDataParallel averages the gradients, so N processes take the steps of one.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import report
import torch
from data import (
    TOPICS,
    CharVocab,
    WordVocab,
    eng_fra_file,
    generated_pairs,
    generated_topics,
    pad_batch,
    pretraining_text,
    read_labelled_csv,
    read_pairs_file,
    split_by_source,
    split_pairs,
    text_windows,
    translation_batch,
    vocabulary,
)
from metrics import evaluate_classifier, evaluate_masked_language_model, evaluate_translation
from model import (
    MaskedLanguageModel,
    Seq2SeqTransformer,
    TransformerClassifier,
    TransformerConfig,
    mask_tokens,
)

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.errors import CheckpointError, DataError, UserError
from shared.logging import progress, start_run
from shared.runtime import (
    PRECISION_HELP,
    PRECISIONS,
    check_fits_in_memory,
    count_parameters,
    init_distributed,
    mixed_precision,
    seed_everything,
    set_threads,
)
from shared.state import TrainingState, check_must_match, load_for_resume, read_state

PROJECT_DIR = Path(__file__).parent
CHECKPOINT = "model.pt"
# What decides the data and the model: a resumed run must have the same.
MUST_MATCH = (
    "task", "dataset", "pairs_file", "csv", "pretrain_text", "init_from", "max_chars", "tokens",
    "min_count",
    "mlm_length", "d_model", "n_head", "d_ff", "n_encoder_layers", "n_decoder_layers",
    "norm_first", "positional", "share_embeddings",
)  # fmt: skip
ENCODER_FLAGS = ("d_model", "n_head", "d_ff", "n_encoder_layers", "norm_first", "positional")
VOCABULARY_NAMES = {"chars": "characters", "words": "words"}
TASKS = {
    "translate": ("transformer translation", "exact_match"),
    "classify": ("transformer classification", "accuracy"),
    "mlm": ("transformer masked language model", "masked_accuracy"),
}


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "tatoeba": Preset(
            "English -> French words on Tatoeba's eng-fra pairs of at most 60 characters",
            dict(
                dataset="eng-fra",
                tokens="words",
                min_count=3,
                max_chars=60,
                d_model=256,
                n_head=8,
                d_ff=1024,
                n_encoder_layers=2,
                n_decoder_layers=2,
                dropout=0.1,
                batch_size=96,
                max_iters=3000,
                warmup_iters=800,
                eval_interval=500,
                eval_size=1000,
                average_last=500,
                threads=2,
            ),
            anchor="the paper's base model: 38.1 BLEU on WMT14 EN-FR (newstest2014)",
            report=("exact_match", "cer"),
        )
    }
    task: str = arg("translate", "translate (encoder-decoder), classify (encoder only), or mlm "
                    "(masked-language-model pre-training of the encoder)",
                    choices=tuple(TASKS))  # fmt: skip
    dataset: str = arg(
        "generated",
        "translation pairs: generated (offline) or eng-fra (DATA/eng-fra/eng-fra.txt)",
        choices=("generated", "eng-fra"),
    )
    pairs_file: str = arg("", "English<TAB>French lines to translate instead of --dataset")
    csv: str = arg("", "label,text rows to classify instead of the generated topics")
    max_chars: int = arg(60, "longest sentence kept from a real file, in characters", min=1)
    tokens: str = arg("chars", "translate characters, or words (for real sentences)",
                      choices=("chars", "words"))  # fmt: skip
    min_count: int = arg(2, "--tokens words: rarer training words become unk", min=1)
    pretrain_text: str = arg("stdlib", "--task mlm's text: stdlib (embedded) or a file")
    mlm_length: int = arg(64, "--task mlm: characters per training window", min=2)
    init_from: str = arg("", "--task classify: start the encoder from this --task mlm model.pt")
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
    # optimisation (1,200 steps of 64 pairs: about 3 minutes on one CPU core)
    batch_size: int = arg(
        64, "examples per step: the global batch, split over torchrun processes", min=1
    )
    max_iters: int = arg(1200, "optimizer steps", min=1)
    warmup_iters: int = arg(200, "steps of warm-up in the paper's schedule", min=1)
    lr_scale: float = arg(
        1.0,
        "factor on the paper's learning-rate schedule, which is for the global batch (the same "
        "for any number of processes)",
        min=0,
        min_inclusive=False,
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
    precision: str = arg("auto", PRECISION_HELP, choices=PRECISIONS)
    # A model this small gains little from a second thread, and when the other core is busy
    # threads that spin waiting for each other lose a lot (measured here with another job
    # running: 186 ms per step with one thread, 1.1 to 2.9 s with two).
    threads: int = arg(1, "torch CPU threads (0: torch's default, one per core)", min=0)

    def check(self):
        if self.d_model % self.n_head:
            raise UserError(f"--d-model {self.d_model} is not a multiple of --n-head {self.n_head}")
        if self.d_model % 2:
            raise UserError(f"--d-model {self.d_model} must be even (sine and cosine pairs)")
        if self.init_from and self.task != "classify":
            raise UserError("--init-from starts a classifier: use it with --task classify")
        if self.tokens == "words" and self.task != "translate":
            raise UserError("--tokens words is for --task translate")


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A tiny model and a few steps of every stage (the weight average begins at step 2)."""
    return dataclasses.replace(
        cfg, d_model=16, n_head=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
        batch_size=8, max_iters=min(cfg.max_iters, 4), warmup_iters=2, eval_interval=2,
        eval_size=8, average_last=min(cfg.average_last, 3),
    )  # fmt: skip


def noam_lr(step: int, d_model: int, warmup: int, scale: float = 1.0) -> float:
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)   (paper, equation 3).

    Linear growth for `warmup` steps, then decay as 1/sqrt(step); step counts from 1.
    """
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


@torch.no_grad()
def update_average(average: torch.nn.Module, model: torch.nn.Module, n: int) -> None:
    """Running mean: after the n-th model, average = (model_1 + ... + model_n) / n, in place.

    mean_n = mean_{n-1} + (x_n - mean_{n-1}) / n, so no sum of n weight sets is ever held.
    Over parameters(), where a tied matrix appears once (in state_dict it would be twice)."""
    for mean, value in zip(average.parameters(), model.parameters(), strict=True):
        if n == 1:
            mean.copy_(value)
        else:
            mean += (value - mean) / n


def batch_generator(step: int, seed: int) -> torch.Generator:
    """The generator of step `step` alone, seeded by (seed, step): a resumed run draws exactly
    the batches and masks the uninterrupted run drew, with no generator state to carry."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# ----------------------------------------------------------------------------- data and model


def load_data(cfg: TrainConfig, pretrained: dict | None):
    """(train, test, vocabulary, label names) of the task.

    translate: training pairs, test (english, [every french translation]); classify: (text,
    label) items; mlm: the training text and held-out windows. One character vocabulary
    covers every text, except that a fine-tuned classifier keeps its pre-trained one.
    """
    if cfg.task == "mlm":
        train_text, val_text = pretraining_text(cfg.pretrain_text, cfg.data_dir)
        if len(train_text) <= cfg.mlm_length or len(val_text) < cfg.mlm_length:
            raise DataError(f"{cfg.pretrain_text} is too short for --mlm-length {cfg.mlm_length}")
        starts = range(0, len(val_text) - cfg.mlm_length + 1, cfg.mlm_length)
        test = text_windows(val_text, cfg.mlm_length, starts)[: cfg.eval_size]
        return train_text, test, CharVocab.build([train_text, *test]), []
    if cfg.task == "classify":
        items, labels = read_labelled_csv(cfg.csv) if cfg.csv else (generated_topics(), TOPICS)
        train, test = split_pairs(items)
        vocab = (
            vocabulary(pretrained["tokens"], pretrained["vocabulary"])
            if pretrained
            else CharVocab.build(t for t, _ in items)
        )
        return train, test[: cfg.eval_size], vocab, list(labels)
    if cfg.pairs_file:
        pairs = read_pairs_file(cfg.pairs_file, cfg.max_chars)
    elif cfg.dataset == "eng-fra":
        pairs = read_pairs_file(eng_fra_file(cfg.data_dir), cfg.max_chars)
    else:
        pairs = generated_pairs()
    train, test = split_by_source(pairs)
    if cfg.tokens == "words":  # the training sentences' words; unseen ones are unk
        vocab = WordVocab.build((s for pair in train for s in pair), cfg.min_count)
    else:
        vocab = CharVocab.build(s for pair in pairs for s in pair)
    return train, test[: cfg.eval_size], vocab, []


def sequence_length(cfg: TrainConfig, train, test, vocab, pretrained: dict | None) -> int:
    """The longest sequence the model reads, bos and eos included: the positions it needs."""
    if cfg.task == "mlm":
        longest = cfg.mlm_length
    elif cfg.task == "classify":
        longest = max(len(t) for t, _ in train + test)
    else:
        texts = [s for pair in train for s in pair] + [s for en, refs in test for s in (en, *refs)]
        longest = max(len(vocab.encode(s)) for s in texts)
    if pretrained is None:
        return longest + 2
    length = pretrained["model_config"]["max_len"]  # the positions the language model learned
    if longest + 2 > length:
        raise DataError(
            f"texts of up to {longest} characters, longer than the pre-trained encoder's "
            f"{length - 2} (pre-train with --mlm-length {longest})"
        )
    return length


def make_model_config(cfg: TrainConfig, vocab, max_len: int, n_labels: int) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=len(vocab),
        max_len=max_len,
        d_model=cfg.d_model,
        n_head=cfg.n_head,
        d_ff=cfg.d_ff,
        n_encoder_layers=cfg.n_encoder_layers,
        n_decoder_layers=cfg.n_decoder_layers if cfg.task == "translate" else 0,
        dropout=cfg.dropout,
        norm_first=cfg.norm_first,
        positional=cfg.positional,
        share_embeddings=cfg.share_embeddings,
        fused_attention=cfg.fused_attention,
        n_classes=n_labels,
        pad_id=vocab.pad_id,
    )


def build_model(task: str, model_config: TransformerConfig, vocab):
    if task == "translate":
        return Seq2SeqTransformer(model_config, vocab.bos_id, vocab.eos_id)
    if task == "classify":
        return TransformerClassifier(model_config)
    return MaskedLanguageModel(model_config)


def check_memory(cfg: TrainConfig, model_config: TransformerConfig, dist) -> None:
    """Stop with one line, before allocating, when the model and one process's share of a batch
    cannot fit."""
    n_params = count_parameters(lambda: build_model(cfg.task, model_config, CharVocab([])))
    B, L, C = cfg.batch_size // dist.world_size, model_config.max_len, cfg.d_model
    attentions = cfg.n_encoder_layers + (2 * cfg.n_decoder_layers if cfg.task == "translate" else 0)
    # per attention sub-layer and position: about 10 C-wide activations kept for backward, the
    # FFN's two d_ff-wide ones, the H scores and weights against every key (x 2 for softmax)
    per_layer = B * L * (10 * C + 2 * cfg.d_ff + 4 * cfg.n_head * L)
    logits = 3 * B * L * model_config.vocab_size  # logits, log-softmax, their gradient
    # weights, gradients, Adam's two moments, the running average: 5 copies of the parameters
    n_bytes = 4 * (5 * n_params + attentions * per_layer + logits)
    share = f", {B} per process" if dist.world_size > 1 else ""
    what = (f"--d-model {C} --d-ff {cfg.d_ff} --n-head {cfg.n_head} --batch-size "
            f"{cfg.batch_size} (sequences of {L}{share})")  # fmt: skip
    check_fits_in_memory(n_bytes, what, dist.device)


def load_pretrained(cfg: TrainConfig) -> dict | None:
    """The --task mlm checkpoint a classifier starts from (None without --init-from)."""
    if not cfg.init_from:
        return None
    path = Path(cfg.init_from)
    required = ("task", "model", "train_config", "tokens", "vocabulary", "model_config")
    ckpt = read_state(path, required=required)
    if ckpt["task"] != "mlm":
        raise CheckpointError(f"--init-from {path} holds a {ckpt['task']} model, not --task mlm")
    check_must_match(ckpt["train_config"], cfg, ENCODER_FLAGS, path)
    return ckpt


def start_from_pretrained(model: TransformerClassifier, pretrained: dict) -> None:
    """Copy the language model's embedding and encoder into the classifier (its head and the
    language model's output bias are the only parameters either side lacks)."""
    weights = pretrained["average"] if pretrained.get("averaged_steps") else pretrained["model"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert unexpected == ["out_bias"] and all(k.startswith("head.") for k in missing)


def summed_loss(model, batch, vocab, cfg: TrainConfig, generator, dist):
    """This process's slice of the global batch: its loss summed over the terms of the mean
    (target characters, texts, or masked characters), and how many terms there are.

    Label-smoothed teacher forcing, cross-entropy, or the masked tokens. The masks of --task mlm
    are drawn for the whole global batch, as one process draws them, and each keeps its rows.
    """
    device = dist.device
    if cfg.task == "translate":
        src, tgt_in, tgt_out = translation_batch(dist.shard(batch), vocab, device)
        loss = model(src, tgt_in, tgt_out, label_smoothing=cfg.label_smoothing, reduction="sum")
        return loss[1], int((tgt_out != vocab.pad_id).sum())
    if cfg.task == "classify":
        mine = dist.shard(batch)
        tokens = pad_batch([vocab.encode(t) for t, _ in mine], vocab.pad_id, device)
        labels = torch.tensor([y for _, y in mine], device=device)
        return model(tokens, labels, reduction="sum")[1], len(mine)
    tokens = pad_batch([vocab.encode(w) for w in batch], vocab.pad_id, "cpu")  # the generator's
    mask_id = vocab.bos_id  # the encoder never reads bos: it serves as [MASK]
    corrupted, targets = mask_tokens(
        tokens, generator, vocab.first_id, mask_id, len(vocab), vocab.pad_id
    )
    corrupted, targets = dist.shard(corrupted).to(device), dist.shard(targets).to(device)
    return model(corrupted, targets, reduction="sum")[1], int((targets != vocab.pad_id).sum())


def train_step(model, optimizer, amp, batch, vocab, cfg: TrainConfig, generator, dist) -> float:
    """One optimizer step on the global batch; returns its loss, the mean over all its terms.

    Each process holds a different number of target characters (its sentences differ in length;
    --task mlm masks a random number of characters), so the mean over its own would weigh a
    character of a short slice more than one of a long slice, and the average of those means
    is not the mean over the global batch. Instead each process divides its sum by the global
    count n (all-reduced) and multiplies by the number of processes N: DDP averages the
    gradients, (1 / N) sum_r N grad(sum_r) / n = grad(sum of all terms) / n, exactly the
    gradient of one process's mean over the whole batch.
    """
    with amp.autocast():
        loss_sum, count = summed_loss(model, batch, vocab, cfg, generator, dist)
    n = max(1.0, dist.all_reduce_mean(count) * dist.world_size)  # terms of the global batch
    optimizer.zero_grad(set_to_none=True)
    amp.backward(loss_sum * dist.world_size / n)
    if cfg.grad_clip > 0:
        amp.unscale(optimizer)  # clip the true gradient, not the fp16-scaled one
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    amp.step(optimizer)
    return dist.all_reduce_mean(loss_sum.item()) * dist.world_size / n


def draw_batch(train, cfg: TrainConfig, generator: torch.Generator) -> list:
    """batch_size examples, drawn with replacement (windows at random offsets for mlm)."""
    if cfg.task == "mlm":
        starts = torch.randint(len(train) - cfg.mlm_length, (cfg.batch_size,), generator=generator)
        return text_windows(train, cfg.mlm_length, starts.tolist())
    return [train[i] for i in torch.randint(len(train), (cfg.batch_size,), generator=generator)]


def evaluate(model, test, vocab, cfg: TrainConfig, device) -> dict:
    if cfg.task == "translate":
        return evaluate_translation(model, test, vocab, device)
    if cfg.task == "classify":
        return evaluate_classifier(model, test, vocab, device)
    return evaluate_masked_language_model(model, test, vocab, device)


def shown(result: dict) -> dict:
    """The numbers of an evaluation (not the translations themselves)."""
    return {k: v for k, v in result.items() if k != "hypotheses"}


# ----------------------------------------------------------------------------- main


def main(cfg: TrainConfig) -> dict:
    cfg = dry_run_config(cfg) if cfg.dry_run else cfg
    dist = init_distributed(cfg.device)  # one process, or this one's place in a torchrun job
    set_threads(cfg.threads)
    seed_everything(cfg.seed + dist.rank)  # each process its own dropout masks
    device = dist.device
    amp = mixed_precision(cfg.precision, device)

    # 1. Data, the model's size, and the checkpoint to resume from, all checked before the
    # run folder is made: a bad file or flag leaves runs/ as it was.
    dist.shard(range(cfg.batch_size))  # a global batch that does not split is refused here
    pretrained = load_pretrained(cfg)
    train, test, vocab, labels = load_data(cfg, pretrained)
    max_len = sequence_length(cfg, train, test, vocab, pretrained)
    model_config = make_model_config(cfg, vocab, max_len, len(labels))
    check_memory(cfg, model_config, dist)
    ckpt = load_for_resume(cfg, PROJECT_DIR, CHECKPOINT, must_match=MUST_MATCH)
    run = start_run(TASKS[cfg.task][0], cfg, PROJECT_DIR, is_main=dist.is_main)

    # 2. The model (DDP gives every process rank 0's initial weights), the running mean of its
    # weights (the paper averages its last checkpoints, 6.1), and Adam with the paper's betas
    # and epsilon (5.3). Rank 0 alone evaluates, prints and writes.
    raw_model = build_model(cfg.task, model_config, vocab).to(device)
    if pretrained:
        start_from_pretrained(raw_model, pretrained)
    model = dist.wrap(raw_model)
    average = copy.deepcopy(raw_model)
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scaler = {"scaler": amp.scaler} if amp.scaler else {}  # fp16 only
    state = TrainingState(run.path / CHECKPOINT, cfg, dist=dist, model=raw_model,
                          average=average, optimizer=optimizer, **scaler)  # fmt: skip
    start = state.restore(ckpt)  # under torchrun each process gets its own generators back
    if dist.is_main:
        if ckpt is not None:
            print(f"resuming {ckpt['path']} at step {start}")
        print(f"{raw_model.num_params():,} parameters, {len(vocab)} "
              f"{VOCABULARY_NAMES[vocab.kind]}, {len(train):,} training and {len(test):,} "
              "held-out examples")  # fmt: skip
    # what inference.py needs besides the weights
    examples = [x if isinstance(x, str) else x[0] for x in test[:5]]
    about = dict(task=cfg.task, model_config=dataclasses.asdict(model_config), tokens=vocab.kind,
                 vocabulary=vocab.symbols, labels=labels, examples=examples)  # fmt: skip
    window = max(0, cfg.max_iters - cfg.average_last)  # the first step (from 0) averaged

    # 3. Training: teacher forcing, label smoothing, warm-up schedule, clipping.
    result = None
    for step in progress(range(start, cfg.max_iters), desc="train", disable=not dist.is_main):
        lr = noam_lr(step + 1, cfg.d_model, cfg.warmup_iters, cfg.lr_scale)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = batch_generator(step, cfg.seed)  # the same on every process
        batch = draw_batch(train, cfg, generator)  # the global batch
        loss = train_step(model, optimizer, amp, batch, vocab, cfg, generator, dist)
        if step >= window:
            update_average(average, raw_model, n=step + 1 - window)
        run.log(step=step + 1, loss=loss, lr=lr)
        if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.max_iters:
            if dist.is_main:
                result = evaluate(raw_model, test, vocab, cfg, device)
                run.log(step=step + 1, **shown(result))
                print(f"step {step + 1}: loss {loss:.4f}, "
                      + ", ".join(f"{k} {v:.4f}" for k, v in shown(result).items()))  # fmt: skip
            state.save(step + 1, averaged_steps=max(0, step + 1 - window), **about)  # every rank
    metrics = {}
    if dist.is_main:
        metrics = finish(run, cfg, raw_model, average, result, test, vocab, dist)
    dist.close()
    return metrics


def finish(run, cfg: TrainConfig, model, average, result, test, vocab, dist) -> dict:
    """4. The final model (the average, if any), its held-out scores, figures and examples."""
    device = dist.device
    # Real sentences have many right translations: BLEU against all of them is the headline.
    real = cfg.task == "translate" and (bool(cfg.pairs_file) or cfg.dataset != "generated")
    score_name = "bleu" if real else TASKS[cfg.task][1]
    n_averaged = min(cfg.average_last, cfg.max_iters)
    extra = {}
    final, result = model, result or evaluate(model, test, vocab, cfg, device)
    if n_averaged > 0:
        extra[f"last_weights_{score_name}"] = result[score_name]
        final, result = average, evaluate(average, test, vocab, cfg, device)
        print(f"weights averaged over the last {n_averaged} steps: "
              + ", ".join(f"{k} {v:.4f}" for k, v in shown(result).items()))  # fmt: skip
        run.log(step=cfg.max_iters, averaged_steps=n_averaged,
                **{f"averaged_{k}": v for k, v in shown(result).items()})  # fmt: skip
    report.write_curves(run.path, score_name)
    if cfg.task == "mlm":
        report.write_masked_predictions(final, test[:8], vocab, run.path / "masked.png", device)
    else:
        report.write_attention_maps(final, vocab, test[0][0], run.path / "attention.png", device)
    if cfg.task == "translate":
        lines = report.write_examples(run.path / "examples.txt", test, result["hypotheses"])
        print("\n".join(lines[:10]))
        extra.update(exact_match=result["exact_match"], cer=result["cer"], bleu=result["bleu"])
    if cfg.task == "mlm":
        extra.update(masked_loss=result["masked_loss"])
    return run.finish(
        metric=score_name,
        value=result[score_name],
        higher_is_better=True,
        **extra,
        params=model.num_params(),
        steps=cfg.max_iters,
        averaged_steps=n_averaged,
        held_out=len(test),
        processes=dist.world_size,
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
