"""Where the parameters of a GPT-2 live, and what a token costs to train.

python show_params.py            # the small default of train.py (char vocabulary of 65)
python show_params.py gpt2       # 124,439,808 parameters
python show_params.py gpt2-xl
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from model import GPT, PRESETS, GPTConfig, preset_config

from shared.cli import arg, cli_main


@dataclass
class ShowConfig:
    config: str = arg("small", "model size", choices=("small", *PRESETS), positional=True)


def build_config(name: str) -> GPTConfig:
    return GPTConfig() if name == "small" else preset_config(name)


def param_table(config: GPTConfig) -> list[tuple[str, int]]:
    """(module, parameters) rows; a block's rows count one block. Built on the meta device:
    shapes only, so even gpt2-xl costs no memory."""
    with torch.device("meta"):
        model = GPT(config)
    block = model.h[0]
    rows = [("wte (token embedding, tied to lm_head)", model.wte.weight.numel())]
    rows.append(("wpe (position embedding)", model.wpe.weight.numel()))
    for name in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
        module = block.get_submodule(name)
        rows.append((f"h[i].{name}", sum(p.numel() for p in module.parameters())))
    per_block = sum(p.numel() for p in block.parameters())
    rows.append((f"one block x {config.n_layer}", per_block * config.n_layer))
    rows.append(("ln_f", sum(p.numel() for p in model.ln_f.parameters())))
    rows.append(("total", model.num_params()))
    return rows


def flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B.

    Each weight takes part in one multiply-add (2 FLOPs) per token forward and two backward
    (gradients of the input and of the weight): 6 N. The position table is a lookup, not a
    matmul, so it is left out of N; the tied token matrix is counted, as the LM head uses it.
    Attention adds QK^T and att V: 2 matmuls of T x D per head and layer, 2 FLOPs each, 3x for
    the backward: 12 L T C. (T: the full context, as the convention is.)
    """
    n = sum(count for name, count in param_table(config) if name == "total")
    n -= config.block_size * config.n_embd
    return 6 * n + 12 * config.n_layer * config.block_size * config.n_embd


def main(cfg: ShowConfig) -> list[tuple[str, int]]:
    config = build_config(cfg.config)
    print(
        f"{cfg.config}: n_layer={config.n_layer} n_head={config.n_head} n_embd={config.n_embd} "
        f"block_size={config.block_size} vocab_size={config.vocab_size}"
    )
    rows = param_table(config)
    for name, count in rows:
        print(f"  {name:<40} {count:>15,}")
    print(f"  {'training FLOPs per token':<40} {flops_per_token(config):>15,.0f}")
    return rows


if __name__ == "__main__":
    cli_main(main, ShowConfig)
