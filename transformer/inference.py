"""Translate English to French, or label a text's topic, with a trained checkpoint.

    python inference.py "three hundred forty-two"          # greedy decoding
    python inference.py --beam 4 "the small cat sees the red car"
    python inference.py --task classify "the new guitar was better than the piano"

    python inference.py --task classify                    # type lines, one label each
    cat sentences.txt | python inference.py -              # "-" reads stdin's lines
    python inference.py --pairs-file pairs.txt             # exact match, CER and BLEU of a file

With no text and no terminal, a few held-out examples stored in the checkpoint are used.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from data import group_by_source, read_pairs_file, vocabulary
from metrics import translate_sentences, translation_scores
from model import Seq2SeqTransformer, TransformerClassifier, TransformerConfig

from shared.checkpoint import load_checkpoint, load_model_state
from shared.cli import arg, cli_main
from shared.errors import CheckpointError, UserError
from shared.logging import default_checkpoint
from shared.runtime import get_device, set_threads

PROJECT_DIR = Path(__file__).parent


@dataclass
class InferenceConfig:
    text: tuple[str, ...] = arg((), "sentences to translate or classify", positional=True)
    checkpoint: str = arg("", "checkpoint (default: runs/latest/model.pt)")
    task: str = arg(
        "auto", "auto: the checkpoint's task", choices=("auto", "translate", "classify")
    )
    beam: int = arg(1, "beam size (1: greedy decoding)", min=1)
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = arg(1, "torch CPU threads (0: torch's default; see train.py --help)", min=0)
    pairs_file: str = arg("", "score English<TAB>French lines: exact match, CER, BLEU")


def load_model(path: Path, device):
    ckpt = load_checkpoint(path, required=("task", "model", "model_config", "tokens", "vocabulary"))
    # The final model is the running mean of the last weights when training averaged them.
    weights = ckpt["average"] if ckpt.get("averaged_steps") else ckpt["model"]
    model_config = TransformerConfig(**ckpt["model_config"])
    vocab = vocabulary(ckpt["tokens"], ckpt["vocabulary"])
    if ckpt["task"] == "translate":
        model = Seq2SeqTransformer(model_config, vocab.bos_id, vocab.eos_id)
    elif ckpt["task"] == "classify":
        model = TransformerClassifier(model_config)
    else:
        raise CheckpointError(
            f"checkpoint {path} holds a masked language model: fine-tune it first "
            f"(python train.py --task classify --init-from {path})"
        )
    load_model_state(model, weights, path)
    return model.to(device).eval(), vocab, ckpt


def read_inputs(cfg: InferenceConfig, examples: list[str]):
    """The texts to process: the arguments; stdin's lines for "-" or at a terminal (one answer
    per line as you type, Ctrl-D ends); otherwise the checkpoint's held-out examples."""
    if cfg.text and cfg.text != ("-",):
        yield from cfg.text
    elif cfg.text == ("-",):
        yield from (line.strip() for line in sys.stdin if line.strip())
    elif sys.stdin.isatty():
        print("type a sentence and press Enter; Ctrl-D (Ctrl-Z Enter on Windows) quits",
              file=sys.stderr)  # fmt: skip
        while True:
            print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                print(file=sys.stderr)
                return
            if line.strip():
                yield line.strip()
    else:
        yield from examples


def score_pairs_file(model, vocab, path: str, device) -> list[str]:
    """Translate every English sentence of a pairs file (each once, all its French translations
    as references) and print exact match, CER and BLEU, with 10 translations beside them."""
    if not isinstance(model, Seq2SeqTransformer):
        raise UserError("--pairs-file scores a translation checkpoint")
    longest = model.cfg.max_len - 2
    pairs = read_pairs_file(path, max_chars=10**9)

    def readable(text: str) -> bool:
        try:
            return len(vocab.encode(text)) <= longest
        except UserError:  # a character the model never saw
            return False

    usable = [(en, fr) for en, fr in pairs if readable(en)]
    if not usable:
        raise UserError(f"no English sentence of {path} fits this model "
                        f"(at most {longest} tokens of its vocabulary)")  # fmt: skip
    test = group_by_source(usable)
    hypotheses = translate_sentences(model, [en for en, _ in test], vocab, device)
    for (en, refs), hyp in list(zip(test, hypotheses))[:10]:
        print(f"{en}\n  -> {hyp}\n     {' | '.join(refs)}")
    scores = translation_scores(hypotheses, [refs for _, refs in test])
    skipped = len(pairs) - len(usable)
    print(
        f"{len(test)} English sentences ({len(usable)} pairs; {skipped} skipped: longer than "
        f"{longest} tokens or with characters the model never saw): exact_match "
        f"{scores['exact_match']:.4f}, cer {scores['cer']:.4f}, bleu {scores['bleu']:.2f}"
    )
    return hypotheses


@torch.no_grad()
def main(cfg: InferenceConfig) -> list[str]:
    set_threads(cfg.threads)
    device = get_device(cfg.device)
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(PROJECT_DIR, "model.pt")
    model, vocab, ckpt = load_model(path, device)
    if cfg.task not in ("auto", ckpt["task"]):
        raise CheckpointError(
            f"checkpoint {path} holds a {ckpt['task']} model, not {cfg.task} "
            f"(train one: python train.py --task {cfg.task})"
        )
    if cfg.pairs_file:
        return score_pairs_file(model, vocab, cfg.pairs_file, device)
    outputs = []
    for text in read_inputs(cfg, ckpt.get("examples", [])):
        text = text.lower()  # the models were trained on lower-case text
        ids = vocab.encode(text)
        if not ids:
            raise UserError("empty input")
        if len(ids) > model.cfg.max_len:
            raise UserError(f"input of {len(ids)} characters; this model reads at most "
                            f"{model.cfg.max_len}")  # fmt: skip
        src = torch.tensor([ids], device=device)
        if ckpt["task"] == "translate":
            if cfg.beam == 1:
                tokens = model.greedy_decode(src, max_len=model.cfg.max_len - 1)[0][0].tolist()
            else:
                tokens = model.beam_search(src, cfg.beam, max_len=model.cfg.max_len - 1)
            output = vocab.decode(tokens)
        else:
            probs = model(src)[0].softmax(dim=-1)[0]
            label = int(probs.argmax())
            output = f"{ckpt['labels'][label]} ({probs[label]:.2f})"
        print(f"{text}\t{output}")
        outputs.append(output)
    return outputs


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
