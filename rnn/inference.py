"""Generate text, or names, from a checkpoint written by train.py.

python inference.py                                        # text from runs/latest/model.npz
python inference.py --prompt "Return the" --length 300 --temperature 0.7 --top-k 10 --seed 1
python inference.py --checkpoint runs/names/model.npz --start k --count 10   # names
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from data import BOUNDARY, Vocabulary, sample_names, sample_text
from model import load_model
from threadpoolctl import threadpool_limits

from shared.cli import arg, cli_main
from shared.errors import UserError
from shared.logging import default_checkpoint

HERE = Path(__file__).parent


@dataclass
class InferenceConfig:
    checkpoint: str = arg("", "model.npz from train.py (default: runs/latest/model.npz)")
    prompt: str = arg("", "text to continue (text models)")
    length: int = arg(500, "characters to generate (text models)", min=1)
    start: str = arg("", "first letters of the names to generate (name models)")
    count: int = arg(10, "names to generate (name models)", min=1)
    temperature: float = arg(
        0.8, "divide the logits by this before the softmax", min=0, min_inclusive=False
    )
    top_k: int = arg(0, "sample only among the k most likely characters (0: all)", min=0)
    seed: int = arg(0, "random seed of the sampler", min=0)
    threads: int = arg(1, "BLAS threads; 1 is fastest for the small per-step products", min=1)


def main(cfg: InferenceConfig) -> str:
    with threadpool_limits(cfg.threads):  # one character at a time: threads only add overhead
        return generate(cfg)


def generate(cfg: InferenceConfig) -> str:
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(HERE, "model.npz")
    model, meta = load_model(path)
    vocab = Vocabulary(meta["chars"])
    rng = np.random.default_rng(cfg.seed)
    if meta["mode"] == "names":
        if cfg.prompt:
            raise UserError("this checkpoint generates names: use --start, not --prompt")
        if BOUNDARY in cfg.start:
            raise UserError("--start must not contain a line break")
        out = "\n".join(
            sample_names(model, vocab, cfg.start, cfg.count, rng, cfg.temperature, cfg.top_k)
        )
    else:
        if cfg.start:
            raise UserError(
                "--start is for name models; this checkpoint was trained on text (use --prompt)"
            )
        out = sample_text(model, vocab, cfg.prompt, cfg.length, rng, cfg.temperature, cfg.top_k)
    print(out)
    return out


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
