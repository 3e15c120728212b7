"""Sample text from a trained checkpoint (default: runs/latest/model.pt), streamed as it comes.

python inference.py
python inference.py --prompt "Return the" --num-samples 3 --temperature 0.7 --top-p 0.9
python inference.py --pretrained ~/gpt2   # a Hugging Face GPT-2 folder: OpenAI's weights
"""

from __future__ import annotations

import codecs
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from model import GPT, GPTConfig, from_pretrained
from tokenizer import BPETokenizer, tokenizer_from_state

from shared.checkpoint import load_checkpoint, load_model_state
from shared.cli import arg, cli_main
from shared.errors import DataError, UserError
from shared.logging import default_checkpoint
from shared.runtime import get_device, seed_everything, set_threads

PROJECT_DIR = Path(__file__).parent


@dataclass
class SampleConfig:
    checkpoint: str = arg("", "checkpoint written by train.py (default: runs/latest/model.pt)")
    pretrained: str = arg(
        "", "a Hugging Face GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt)"
    )
    prompt: str = arg("The ", "text the samples continue")
    prompt_ids: tuple[int, ...] = arg((), "token ids to continue instead of --prompt")
    num_samples: int = arg(2, "samples to draw", min=1)
    max_new_tokens: int = arg(300, "tokens per sample", min=1)
    temperature: float = arg(0.8, "divide the logits by this; 0 picks the most likely token", min=0)
    top_k: int = arg(200, "sample among the k most likely tokens (0: all)", min=0)
    top_p: float = arg(
        1.0,
        "sample among the most likely tokens holding this much probability",
        min=0,
        max=1,
        min_inclusive=False,
    )
    kv_cache: bool = arg(
        True, "reuse the keys and values of past tokens (off: recompute them; the same tokens)"
    )
    seed: int = arg(0, "random seed", min=0)
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = arg(1, "torch CPU threads (0: torch's default; see train.py --help)", min=0)


def load_model(cfg: SampleConfig, device: torch.device):
    """(model, tokenizer) from a train.py checkpoint or a Hugging Face GPT-2 folder."""
    if cfg.pretrained:
        folder = Path(cfg.pretrained)
        for encoder, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if (folder / encoder).is_file() and (folder / merges).is_file():
                tokenizer = BPETokenizer.from_gpt2_files(folder / encoder, folder / merges)
                break
        else:
            raise DataError(
                f"{folder} has no vocab.json + merges.txt (or encoder.json + vocab.bpe)"
            )
        return from_pretrained(folder).to(device), tokenizer
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(PROJECT_DIR, "model.pt")
    ckpt = load_checkpoint(path, required=("model", "model_config", "tokenizer"))
    model = GPT(GPTConfig(**ckpt["model_config"]))
    load_model_state(model, ckpt["model"], path)
    return model.to(device), tokenizer_from_state(ckpt["tokenizer"])


def main(cfg: SampleConfig) -> list[str]:
    device = get_device(cfg.device)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    model, tokenizer = load_model(cfg, device)
    model.eval()
    if cfg.prompt_ids:
        ids = list(cfg.prompt_ids)
        outside = [i for i in ids if not 0 <= i < model.config.vocab_size]
        if outside:
            raise UserError(
                f"token ids outside the vocabulary of {model.config.vocab_size}: {outside[:5]}"
            )
    else:
        if not cfg.prompt:
            raise UserError("--prompt is empty: give the text to continue, e.g. --prompt 'The '")
        ids = tokenizer.encode(cfg.prompt)  # unknown characters: one-line UserError

    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    samples, new_tokens, started = [], 0, time.perf_counter()
    for n in range(cfg.num_samples):
        print(f"--- sample {n + 1}")
        # Bytes of one character may arrive in different tokens: decode incrementally.
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = utf8.decode(token_bytes(tokenizer, ids))
        sys.stdout.write(text)
        idx = torch.tensor([ids], device=device)
        for token in model.stream(
            idx,
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k or None,
            top_p=cfg.top_p,
            use_cache=cfg.kv_cache,
            generator=generator,
        ):
            piece = utf8.decode(token_bytes(tokenizer, token[0].tolist()))
            sys.stdout.write(piece)
            sys.stdout.flush()
            text += piece
            new_tokens += 1
        text += utf8.decode(b"", final=True)
        print()
        samples.append(text)
    seconds = time.perf_counter() - started
    print(
        f"{new_tokens} tokens in {seconds:.1f} s ({new_tokens / seconds:.0f} tokens/s)",
        file=sys.stderr,
    )
    return samples


def token_bytes(tokenizer, ids: list[int]) -> bytes:
    if tokenizer.kind == "bpe":
        return tokenizer.decode_bytes(ids)
    return tokenizer.decode(ids).encode("utf-8")


if __name__ == "__main__":
    cli_main(main, SampleConfig)
