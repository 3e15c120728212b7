"""Fresh sentences for the five topics, none of them in the classifier's corpus, to classify.

    python make_texts.py --per-topic 4 --out fresh.txt    # the answer key on stdout
    python inference.py --task classify - < fresh.txt     # what the classifier says

The sentences come from the same templates and topic words as the training corpus (data.py),
drawn with another seed, and every one of the corpus's 6,000 sentences is left out, so the
classifier has seen none of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from data import TOPICS, generated_topics, topic_sentence

from shared.checkpoint import atomic_write_text
from shared.cli import arg, cli_main
from shared.errors import UserError


@dataclass
class TextsConfig:
    per_topic: int = arg(4, "sentences per topic", min=1)
    out: str = arg("fresh_texts.txt", "file to write, one sentence per line")
    seed: int = arg(0, "which fresh sentences")


def fresh_texts(per_topic: int, seed: int) -> list[tuple[str, str]]:
    """(topic, sentence) pairs, per_topic of each topic in turn, none in the training corpus."""
    seen = {text for text, _ in generated_topics()}
    rng, texts = random.Random(f"fresh texts {seed}"), []
    for topic in TOPICS:
        found, tries = 0, 0
        while found < per_topic:
            tries += 1
            if tries > 100 * per_topic + 1000:
                raise UserError(f"--per-topic {per_topic}: too few unseen {topic} sentences left")
            text = topic_sentence(rng, topic)
            if text not in seen:
                seen.add(text)
                texts.append((topic, text))
                found += 1
    return texts


def main(cfg: TextsConfig) -> list[tuple[str, str]]:
    texts = fresh_texts(cfg.per_topic, cfg.seed)
    atomic_write_text(Path(cfg.out), "".join(f"{text}\n" for _, text in texts))
    for topic, text in texts:
        print(f"{topic}\t{text}")
    return texts


if __name__ == "__main__":
    cli_main(main, TextsConfig)
