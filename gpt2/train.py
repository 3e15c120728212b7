"""Train GPT-2 on text, from a laptop CPU to `torchrun --nproc_per_node N` on GPUs.

    python train.py                      # stdlib docstrings, one token per character
    python train.py --preset shakespeare_char --data-dir DATA   # nanoGPT's small CPU run
    python train.py --tokenizer bpe      # byte-level BPE learned on the training text
    python train.py --resume             # continue runs/latest exactly where it stopped
    torchrun --standalone --nproc_per_node 2 train.py --grad-accum 2

DATA is a folder holding shakespeare/input.txt (tiny Shakespeare; downloaded there on first use).
The recipe is GPT-2's / nanoGPT's: AdamW with weight decay on matrices only, linear warm-up then
cosine decay of the learning rate, gradient clipping, gradient accumulation, bf16 autocast on
CUDA. The batch of step s is drawn from a generator seeded by (seed, s), so it does not depend
on how many processes share it or on whether the run was resumed; everything else a resumed
step depends on (weights, AdamW's moments, torch's generator for dropout) is in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import report
import torch
from model import GPT, GPTConfig, training_bytes
from tokenizer import BPETokenizer, CharTokenizer, tokenizer_from_state

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.data import load_text, split_text
from shared.errors import DataError, UserError
from shared.logging import progress, start_run
from shared.runtime import (
    PRECISION_HELP,
    PRECISIONS,
    check_fits_in_memory,
    init_distributed,
    mixed_precision,
    seed_everything,
    set_threads,
)
from shared.state import TrainingState, load_for_resume

PROJECT_DIR = Path(__file__).parent
CHECKPOINT = "model.pt"
# Flags that must be the same when resuming: they decide the data, the tokens and the model.
MUST_MATCH = ("dataset", "tokenizer", "vocab_size", "block_size", "n_layer", "n_head", "n_embd")


# nanoGPT's choices for training from scratch: SDPA's attention kernel and the exact GELU (the
# tanh form is GPT-2's, which only its released weights need). Same model, faster on a CPU.
FAST_CPU = dict(fused_attention=True, gelu="exact")


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "shakespeare_char": Preset(
            "tiny Shakespeare, one token per character: nanoGPT's CPU recipe (4x4x128, block 64)",
            dict(**FAST_CPU, dataset="shakespeare", tokenizer="char", max_iters=2000),
            anchor="nanoGPT README: val loss 1.88 in about 3 minutes on a CPU",
            report=("val_bits_per_byte", "tokens_per_s"),
        ),
        "shakespeare_bpe": Preset(
            "tiny Shakespeare, byte-level BPE (512 tokens) learned on the training text",
            dict(
                **FAST_CPU, dataset="shakespeare", tokenizer="bpe", vocab_size=512, max_iters=2000
            ),
            anchor="the character recipe, compared in bits per byte (as nanochat reports)",
            report=("val_bits_per_byte", "val_loss_per_char"),
        ),
    }
    dataset: str = arg("stdlib", "stdlib (embedded), shakespeare, or the path of a UTF-8 text file")
    tokenizer: str = arg(
        "char", "char: one token per character; bpe: byte-level BPE", choices=("char", "bpe")
    )
    vocab_size: int = arg(512, "BPE vocabulary size: 256 bytes + merges + <|endoftext|>", min=257)
    # model (GPTConfig)
    n_layer: int = arg(4, "transformer blocks", min=1)
    n_head: int = arg(4, "attention heads per block", min=1)
    n_embd: int = arg(128, "width of the residual stream (a multiple of --n-head)", min=1)
    block_size: int = arg(64, "context length in tokens", min=2)
    dropout: float = arg(0.0, "dropout probability", min=0, max=0.99)
    fused_attention: bool = arg(False, "use F.scaled_dot_product_attention (tested equal)")
    gelu: str = arg(
        "tanh",
        "GELU: GPT-2's tanh approximation, or exact (faster on a CPU)",
        choices=("tanh", "exact"),
    )
    # optimisation
    batch_size: int = arg(12, "sequences per micro-batch (per process)", min=1)
    grad_accum: int = arg(1, "micro-batches per step, over all processes", min=1)
    max_iters: int = arg(1500, "optimizer steps", min=1)
    lr: float = arg(1e-3, "peak learning rate", min=0, min_inclusive=False)
    min_lr: float = arg(1e-4, "learning rate at the end of the cosine decay", min=0)
    warmup_iters: int = arg(100, "steps of linear warm-up", min=0)
    lr_decay_iters: int = arg(0, "steps of cosine decay (0: --max-iters)", min=0)
    weight_decay: float = arg(0.1, "AdamW weight decay, on matrices only", min=0)
    beta1: float = arg(0.9, "AdamW beta1", min=0, max=1)
    beta2: float = arg(0.99, "AdamW beta2", min=0, max=1)
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: no clipping)", min=0)
    # evaluation, samples, speed
    eval_interval: int = arg(250, "steps between evaluations and checkpoints", min=1)
    eval_iters: int = arg(20, "batches per loss estimate", min=1)
    sample_tokens: int = arg(300, "tokens per sample written at the end", min=1)
    compile: bool = arg(False, "torch.compile the model")
    precision: str = arg("auto", PRECISION_HELP, choices=PRECISIONS)
    # A model this small gains little from more threads, and on a busy machine threads that spin
    # waiting for each other lose a lot (measured: 6.5 vs 0.2-2 steps/s at load 8 on 2 cores).
    threads: int = arg(1, "torch CPU threads (0: torch's default, one per core)", min=0)

    def check(self):
        if self.n_embd % self.n_head:
            raise UserError(f"--n-embd {self.n_embd} is not a multiple of --n-head {self.n_head}")
        if self.min_lr > self.lr:
            raise UserError(f"--min-lr {self.min_lr} is above --lr {self.lr}")


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A tiny model and a few steps of every stage."""
    return dataclasses.replace(
        cfg,
        vocab_size=min(cfg.vocab_size, 300),
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=16,
        batch_size=4,
        max_iters=min(cfg.max_iters, 4),
        warmup_iters=1,
        eval_interval=2,
        eval_iters=2,
        sample_tokens=40,
    )


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr (Loshchilov & Hutter 2017)."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    progress_ = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress_)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (linear weights, embeddings), not on biases and
    LayerNorm gains, which set scales and offsets rather than store features."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied matrix once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda"
    )


def batch_offsets(step: int, count: int, n_tokens: int, block_size: int, seed: int) -> torch.Tensor:
    """Start positions of the count sequences of step `step`: the same in any process."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n_tokens - block_size, (count,), generator=g)


def get_batch(ids: torch.Tensor, offsets: torch.Tensor, block_size: int, device: torch.device):
    """Inputs x and next-token targets y, both (B, T): y[b, t] = x[b, t + 1]."""
    x = torch.stack([ids[o : o + block_size] for o in offsets.tolist()])
    y = torch.stack([ids[o + 1 : o + 1 + block_size] for o in offsets.tolist()])
    return x.to(device), y.to(device)


@torch.no_grad()
def estimate_loss(model, ids, cfg: TrainConfig, device, autocast) -> float:
    """Mean loss over eval_iters random batches, the same batches at every evaluation."""
    model.eval()
    offsets = batch_offsets(-1, cfg.eval_iters * cfg.batch_size, len(ids), cfg.block_size, cfg.seed)
    losses = []
    for chunk in offsets.split(cfg.batch_size):
        x, y = get_batch(ids, chunk, cfg.block_size, device)
        with autocast:
            losses.append(model(x, y)[1].item())
    model.train()
    return sum(losses) / len(losses)


@torch.no_grad()
def full_loss(model, ids, cfg: TrainConfig, device, autocast) -> float:
    """Mean loss over every token of ids, read in consecutive windows of block_size."""
    model.eval()
    n_windows = (len(ids) - 1) // cfg.block_size
    offsets = torch.arange(n_windows) * cfg.block_size
    total = 0.0
    for chunk in offsets.split(4 * cfg.batch_size):
        x, y = get_batch(ids, chunk, cfg.block_size, device)
        with autocast:
            total += model(x, y)[1].item() * len(chunk)
    model.train()
    return total / n_windows


def unigram_loss(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """The baseline: cross-entropy of val under token frequencies of train (add-one smoothed),
    what a model that ignores all context can reach."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1
    log_p = (counts / counts.sum()).log()
    return -log_p[val_ids].mean().item()


def load_tokens(cfg: TrainConfig, ckpt: dict | None):
    """(tokenizer, train ids, val ids, val text): the checkpoint's tokenizer when resuming,
    else one fit to the text (characters of all of it, or BPE merges learned on train)."""
    text = load_text(cfg.dataset, cfg.data_dir)
    if cfg.dry_run:
        text = text[:20_000]
    train_text, val_text = split_text(text, val_fraction=0.1)
    if ckpt is not None:
        tokenizer = tokenizer_from_state(ckpt["tokenizer"])
    elif cfg.tokenizer == "char":
        tokenizer = CharTokenizer.train(text)
    else:
        tokenizer = BPETokenizer.train(train_text, cfg.vocab_size)
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    if min(len(train_ids), len(val_ids)) <= cfg.block_size + 1:
        raise DataError(
            f"{cfg.dataset}: the validation tenth has {len(val_ids)} tokens, "
            f"fewer than --block-size {cfg.block_size} + 2; use more text or a smaller block"
        )
    return tokenizer, train_ids, val_ids, val_text


def model_config(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    fields = ("block_size", "n_layer", "n_head", "n_embd", "dropout", "fused_attention", "gelu")
    return GPTConfig(vocab_size=vocab_size, **{name: getattr(cfg, name) for name in fields})


def micro_batches_per_process(grad_accum: int, world_size: int) -> int:
    """Each of world_size processes takes an equal share of the step's grad_accum micro-batches."""
    if grad_accum % world_size:
        raise UserError(f"--grad-accum {grad_accum} is not a multiple of {world_size} processes")
    return grad_accum // world_size


def check_memory(cfg: TrainConfig, config: GPTConfig, device: torch.device) -> None:
    check_fits_in_memory(
        training_bytes(config, cfg.batch_size),
        f"--n-embd {cfg.n_embd} --n-layer {cfg.n_layer} --block-size {cfg.block_size} "
        f"--batch-size {cfg.batch_size}",
        device,
    )


def describe(tokenizer, train_ids: torch.Tensor) -> str:
    return (
        f"{tokenizer.kind} vocabulary of {tokenizer.vocab_size}, {len(train_ids):,} training tokens"
    )


def text_metrics(val_loss: float, tokenizer, train_ids, val_ids, val_text: str) -> dict:
    """The validation loss beside its baseline and in units that compare tokenizers: nats per
    token depend on the tokenizer; nats per character and bits per UTF-8 byte (total nats /
    (ln 2 x bytes of the text)) compare any two."""
    total_nats = val_loss * len(val_ids)
    return dict(
        unigram_val_loss=unigram_loss(train_ids, val_ids, tokenizer.vocab_size),
        val_loss_per_char=total_nats / len(val_text),
        val_bits_per_byte=total_nats / (math.log(2) * len(val_text.encode())),
        tokenizer=tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
    )


def accumulate_gradients(model, train_ids, offsets, cfg: TrainConfig, amp, dist) -> float:
    """Forward and backward over this process's micro-batches (offsets: (micro_steps, B));
    returns their mean loss. Gradients are averaged over processes after the last one only."""
    micro_steps = len(offsets)
    step_loss = 0.0
    for micro in range(micro_steps):
        x, y = get_batch(train_ids, offsets[micro], cfg.block_size, dist.device)  # (B, T) each
        last = micro == micro_steps - 1
        with amp.autocast(), model.no_sync() if dist.enabled and not last else nullcontext():
            _, loss = model(x, y)
            amp.backward(loss / micro_steps)  # the mean over the micro-batches
        step_loss += loss.item() / micro_steps
    return step_loss


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    dist = init_distributed(cfg.device)
    device = dist.device
    micro_steps = micro_batches_per_process(cfg.grad_accum, dist.world_size)
    set_threads(cfg.threads)
    seed_everything(cfg.seed + dist.rank)  # dropout masks differ between processes
    amp = mixed_precision(cfg.precision, device)
    autocast = amp.autocast()

    # 1. Checkpoint, text and tokens, memory: all checked before the run folder is touched.
    ckpt = load_for_resume(cfg, PROJECT_DIR, CHECKPOINT, MUST_MATCH, required=("tokenizer", "rng"))
    tokenizer, train_ids, val_ids, val_text = load_tokens(cfg, ckpt)
    config = model_config(cfg, tokenizer.vocab_size)
    check_memory(cfg, config, device)  # one line naming the flags, not an allocation failure
    run = start_run("gpt2 language model", cfg, PROJECT_DIR, is_main=dist.is_main)

    # 2. The model, its optimizer, and everything a resumed run needs back.
    raw_model = GPT(config).to(device)  # the plain module, for saving and evaluation
    optimizer = make_optimizer(raw_model, cfg, device)
    scaler = {"scaler": amp.scaler} if amp.scaler else {}  # fp16 only
    state = TrainingState(
        run.path / CHECKPOINT, cfg, dist=dist, model=raw_model, optimizer=optimizer, **scaler
    )
    start = state.restore(ckpt)  # also each process's global generator: the dropout masks
    for_inference = dict(model_config=asdict(config), tokenizer=tokenizer.state())
    if dist.is_main:
        resuming = f"; resuming at step {start}" if ckpt else ""
        print(f"{raw_model.num_params():,} parameters, {describe(tokenizer, train_ids)}{resuming}")
    model = dist.wrap(torch.compile(raw_model) if cfg.compile else raw_model)

    # 3. The training loop. Every process takes its share of the step's global batch.
    global_batch = cfg.grad_accum * cfg.batch_size
    train_time = 0.0
    for step in progress(range(start, cfg.max_iters), desc="train", disable=not dist.is_main):
        started = time.perf_counter()
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        offsets = batch_offsets(step, global_batch, len(train_ids), cfg.block_size, cfg.seed)
        mine = offsets.view(dist.world_size, micro_steps, cfg.batch_size)[dist.rank]
        step_loss = accumulate_gradients(model, train_ids, mine, cfg, amp, dist)
        if cfg.grad_clip > 0:
            amp.unscale(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        amp.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        step_loss = dist.all_reduce_mean(step_loss)
        train_time += time.perf_counter() - started
        run.log(step=step + 1, loss=step_loss, lr=lr)
        if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.max_iters:
            train_est = estimate_loss(raw_model, train_ids, cfg, device, autocast)
            val_est = estimate_loss(raw_model, val_ids, cfg, device, autocast)
            run.log(step=step + 1, train_loss=train_est, val_loss=val_est)
            if dist.is_main:
                print(f"step {step + 1}: train loss {train_est:.4f}, val loss {val_est:.4f}")
            state.save(step + 1, **for_inference)  # on every process; rank 0 writes

    # 4. Final numbers: the loss over the whole validation text, and the baseline to beat.
    val_loss = full_loss(raw_model, val_ids, cfg, device, autocast)
    if dist.is_main:
        report.write_samples(raw_model, tokenizer, cfg, device, run.path / "samples.txt")
        report.write_loss_plot(run.path)
    trained_tokens = (cfg.max_iters - start) * global_batch * cfg.block_size
    metrics = run.finish(
        metric="val_loss",
        value=val_loss,
        higher_is_better=False,
        **text_metrics(val_loss, tokenizer, train_ids, val_ids, val_text),
        params=raw_model.num_params(),
        steps=cfg.max_iters,
        tokens_per_s=round(trained_tokens / max(train_time, 1e-9)),
        processes=dist.world_size,
    )
    dist.close()
    return metrics


if __name__ == "__main__":
    cli_main(main, TrainConfig)
