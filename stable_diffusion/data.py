"""Captioned images that need no download: a digit placed in one corner of a larger canvas,
described in words that vary ("a handwritten seven in the top left corner", "the number 7,
upper left"). The corner is the attribute that only the words carry: to follow a prompt the
model must read both the digit and where to put it.

Also the word-level tokenizer: our captions use a small closed vocabulary, so a word-level
tokenizer is exact, and any word outside it is a clear error rather than a silent guess.
"""

from __future__ import annotations

import re

import numpy as np

from shared.data import load_images, resize_images
from shared.errors import UserError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CORNERS = ("top left", "top right", "bottom left", "bottom right")
TEMPLATES = (
    "a handwritten {word} {place}",
    "the number {digit} {place}",
    "digit {word}, {place}",
    "{place}, a {word}",
    "a {word} drawn by hand {place}",
    "the digit {digit} {place}",
)
PLACES = (
    "in the {corner} corner",
    "at the {corner}",
    "{corner}",
    "placed {corner}",
)
# "upper" and "lower" are accepted as synonyms of "top" and "bottom".
SYNONYMS = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
# Characters a prompt may hold: the words' letters and numerals, spaces, and punctuation that
# only separates words. Anything else (an accent, a symbol) is an error, never dropped silently.
ALLOWED = re.compile(r"[A-Za-z0-9\s,.;:!?'\"()-]")


def caption(digit: int, corner: int, rng: np.random.Generator) -> str:
    """One random wording of (digit, corner)."""
    vertical, horizontal = CORNERS[corner].split()
    vertical = rng.choice(SYNONYMS[vertical])
    place = rng.choice(PLACES).format(corner=f"{vertical} {horizontal}")
    template = rng.choice(TEMPLATES)
    return template.format(word=DIGIT_WORDS[digit], digit=digit, place=place)


def canonical_prompt(digit: int, corner: int) -> str:
    return f"a handwritten {DIGIT_WORDS[digit]} in the {CORNERS[corner]} corner"


class Tokenizer:
    """Words -> ids: <pad>=0, <bos>=1, <eos>=2, then the caption vocabulary in sorted order."""

    def __init__(self, max_tokens: int = 12):
        words = set(DIGIT_WORDS) | {str(d) for d in range(10)}
        for text in TEMPLATES + PLACES:
            words |= set(self.split(re.sub(r"\{\w+\}", " ", text)))
        for corner in CORNERS:
            words |= set(corner.split())
        words |= {w for synonyms in SYNONYMS.values() for w in synonyms}
        self.vocab = [PAD, BOS, EOS, *sorted(words)]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_tokens = max_tokens

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids (max_tokens,), mask (max_tokens,) True on real tokens) for one caption."""
        strange = sorted({ch for ch in text if not ALLOWED.fullmatch(ch)})
        if strange:
            shown = ", ".join(repr(ch) for ch in strange)
            raise UserError(f"characters the tokenizer does not know: {shown}")
        words = self.split(text)
        unknown = sorted({w for w in words if w not in self.index})
        if unknown:
            raise UserError(f"words the tokenizer does not know: {', '.join(unknown)}")
        ids = [self.index[BOS], *(self.index[w] for w in words), self.index[EOS]]
        if len(ids) > self.max_tokens:
            raise UserError(f"prompt too long: {len(words)} words, at most {self.max_tokens - 2}")
        mask = np.zeros(self.max_tokens, dtype=bool)
        mask[: len(ids)] = True
        return np.array(ids + [0] * (self.max_tokens - len(ids)), dtype=np.int64), mask

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.encode(t) for t in texts]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def __len__(self) -> int:
        return len(self.vocab)


class CaptionedDigits:
    """Digits of one split; `sample` pastes random ones into random corners, with captions."""

    def __init__(self, split: str, canvas: int = 24, dataset: str = "digits", data_dir=None):
        digits, labels = load_images(dataset, split, data_dir)
        self.digit_size = canvas // 2
        self.digits = np.clip(resize_images(digits[:, 0], self.digit_size), 0, 1)
        self.labels = labels
        self.canvas = canvas

    def place(self, digit_images: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """(N, s, s) digits into corners of (N, 1, canvas, canvas) black images."""
        out = np.zeros((len(digit_images), 1, self.canvas, self.canvas), dtype=np.float32)
        s = self.digit_size
        for i, (image, corner) in enumerate(zip(digit_images, corners)):
            top, left = (corner // 2) * s, (corner % 2) * s
            out[i, 0, top : top + s, left : left + s] = image
        return out

    def sample(self, n: int, rng: np.random.Generator, keep=None):
        """images (n, 1, H, W), captions (list of n str), digits (n,), corners (n,).

        With `keep` (Distributed.shard: this process's share of a global batch), all n are
        drawn, so that rng moves on alike in every process, and only the kept part is made.
        """
        index = rng.integers(len(self.digits), size=n)
        corners = rng.integers(4, size=n)
        digits = self.labels[index]
        captions = [caption(d, c, rng) for d, c in zip(digits, corners)]
        if keep is not None:
            index, corners, digits, captions = map(keep, (index, corners, digits, captions))
        return self.place(self.digits[index], corners), captions, digits, corners


def ink_corner(images: np.ndarray) -> np.ndarray:
    """Which corner holds the most ink, per (N, 1, H, W) image: 0 TL, 1 TR, 2 BL, 3 BR."""
    h = images.shape[-1] // 2
    quadrants = np.stack(
        [
            images[:, 0, :h, :h].sum((1, 2)),
            images[:, 0, :h, h:].sum((1, 2)),
            images[:, 0, h:, :h].sum((1, 2)),
            images[:, 0, h:, h:].sum((1, 2)),
        ],
        axis=1,
    )
    return quadrants.argmax(1)


def crop_corner(images: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The (N, 1, H/2, W/2) quadrant of each image named by corners."""
    h = images.shape[-1] // 2
    return np.stack(
        [
            images[i, :, (c // 2) * h : (c // 2 + 1) * h, (c % 2) * h : (c % 2 + 1) * h]
            for i, c in enumerate(corners)
        ]
    )
