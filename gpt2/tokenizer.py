"""Text to token ids and back: characters, or GPT-2's byte-level byte-pair encoding (BPE).

Byte-level BPE (Sennrich et al. 2016; GPT-2 section 2.2) starts from the 256 byte values, so any
text, in any script, can be encoded and nothing is ever "unknown". Training repeatedly merges
the most frequent adjacent pair of tokens into a new token; encoding replays those merges,
lowest rank (earliest learned) first. GPT-2 first splits text into words, numbers, punctuation
runs and spaces (PRE_SPLIT) so that no merge crosses those boundaries ("dog." never becomes a
token of its own).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from shared.errors import DataError, UserError
from shared.logging import progress

END_OF_TEXT = "<|endoftext|>"

# GPT-2's pattern is 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# written for the third-party `regex` module. The standard `re` has no \p{...}, so: letters are
# [^\W\d_] (word characters that are neither digits nor "_"), numbers are \d, and the rest is
# [^\s\w] or "_". And `re`'s \s also matches the separators \x1c-\x1f, which `regex`'s \s (the
# Unicode White_Space property) does not, so whitespace is spelled out as that property. Identical
# on ASCII; a few rare characters (e.g. "½", a \p{N} that is not \d) fall in a different class.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
PRE_SPLIT = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+"
    rf"| ?(?:[^{WHITE_SPACE}\w]|_)+|[{WHITE_SPACE}]+(?![^{WHITE_SPACE}])|[{WHITE_SPACE}]+"
)


class CharTokenizer:
    """One token per character seen in the training text."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise UserError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return [self.index[ch] for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def state(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class BPETokenizer:
    """Byte-level BPE: vocab[id] is the token's bytes; merges[rank] = (left id, right id)."""

    kind = "bpe"

    def __init__(self, vocab: list[bytes], merges: list[tuple[int, int]], special: dict[str, int]):
        self.vocab = vocab
        self.merges = merges
        self.special = special
        token_id = {token: i for i, token in enumerate(vocab) if i not in special.values()}
        self.byte_id = {token[0]: i for token, i in token_id.items() if len(token) == 1}
        self.rank = {pair: r for r, pair in enumerate(merges)}
        self.merged = {(a, b): token_id[vocab[a] + vocab[b]] for a, b in merges}
        names = sorted(special, key=len, reverse=True)
        self.special_split = (
            re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None
        )
        self.cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Learn vocab_size - 257 merges on text (256 bytes and <|endoftext|> come first)."""
        if vocab_size < 257:
            raise UserError(
                f"a byte-level BPE vocabulary needs at least 257 tokens, got {vocab_size}"
            )
        chunk_counts = Counter(PRE_SPLIT.findall(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # token ids, bytes at first
        freq = list(chunk_counts.values())
        vocab = [bytes([b]) for b in range(256)]
        pair_count: Counter = Counter()  # how often each adjacent pair occurs in the corpus
        where = defaultdict(set)  # pair -> the words it occurs in
        for w, word in enumerate(words):
            for pair in zip(word, word[1:]):
                pair_count[pair] += freq[w]
                where[pair].add(w)
        merges = []
        for new_id in progress(range(256, vocab_size - 1), desc="BPE merges"):
            if not pair_count:
                break  # every chunk is a single token: nothing left to merge
            # The most frequent pair; ties go to the smallest ids, so results are hand-checkable.
            best = max(pair_count, key=lambda p: (pair_count[p], -p[0], -p[1]))
            merges.append(best)
            vocab.append(vocab[best[0]] + vocab[best[1]])
            for w in where.pop(best):
                for pair in zip(words[w], words[w][1:]):  # this word's old pairs go...
                    pair_count[pair] -= freq[w]
                words[w] = merge_pair(words[w], best, new_id)
                for pair in zip(words[w], words[w][1:]):  # ...and its new pairs come
                    pair_count[pair] += freq[w]
                    where[pair].add(w)
            pair_count = +pair_count  # drop pairs that no longer occur
        vocab.append(END_OF_TEXT.encode("utf-8"))
        return cls(vocab, merges, {END_OF_TEXT: len(vocab) - 1})

    @classmethod
    def from_gpt2_files(cls, encoder_path: str | Path, merges_path: str | Path) -> BPETokenizer:
        """Read OpenAI's encoder.json + vocab.bpe (Hugging Face: vocab.json + merges.txt).

        Both write each byte as a printable character (bytes_to_unicode), e.g. a space as "Ġ".
        """
        byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
        try:
            encoder = json.loads(Path(encoder_path).read_text(encoding="utf-8"))
            lines = Path(merges_path).read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read GPT-2 tokenizer files: {err}") from None
        special = {name: i for name, i in encoder.items() if name == END_OF_TEXT}
        vocab = [b""] * (max(encoder.values()) + 1)
        for text, i in encoder.items():
            vocab[i] = text.encode("utf-8") if text in special else bytes(byte_of[c] for c in text)
        token_id = {token: i for i, token in enumerate(vocab)}
        merges = []
        for number, line in enumerate(lines, start=1):
            if line.startswith("#version") or not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(
                    f"{merges_path} line {number}: expected two tokens, not {len(parts)}: {line!r}"
                )
            try:  # the two tokens and the one they merge into must all be in the vocabulary
                left, right, _ = (
                    token_id[bytes(byte_of[c] for c in part)] for part in (*parts, "".join(parts))
                )
            except KeyError:
                raise DataError(
                    f"{merges_path} line {number}: {line!r} names a token not in {encoder_path}"
                ) from None
            merges.append((left, right))
        return cls(vocab, merges, special)

    def encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one pre-split chunk, lowest rank first (GPT-2's `bpe`)."""
        if chunk in self.cache:
            return self.cache[chunk]
        try:
            ids = [self.byte_id[b] for b in chunk.encode("utf-8")]
        except KeyError as err:
            raise UserError(f"byte {err.args[0]} has no token in this vocabulary") from None
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.rank.get(p, len(self.rank)))
            if pair not in self.rank:
                break  # no learned merge applies any more
            ids = merge_pair(ids, pair, self.merged[pair])
        self.cache[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of text; special tokens written out (<|endoftext|>) become their own id."""
        pieces = self.special_split.split(text) if self.special_split else [text]
        ids = []
        for piece in pieces:
            if piece in self.special:
                ids.append(self.special[piece])
                continue
            for chunk in PRE_SPLIT.findall(piece):
                ids.extend(self.encode_chunk(chunk))
        return ids

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.vocab[i] for i in ids)

    def decode(self, ids: list[int]) -> str:
        # A sampled sequence may end inside a multi-byte character: show it as U+FFFD.
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def state(self) -> dict:
        """Plain lists and strings, so that a weights_only checkpoint can hold the tokenizer."""
        return {
            "kind": self.kind,
            "vocab": [token.hex() for token in self.vocab],
            "merges": [list(pair) for pair in self.merges],
            "special": dict(self.special),
        }


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of pair in ids, left to right, by new_id."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 characters stand for
    themselves, the other 68 bytes (controls, space, ...) take characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def tokenizer_from_state(state: dict) -> CharTokenizer | BPETokenizer:
    if state.get("kind") == "char":
        return CharTokenizer(state["chars"])
    if state.get("kind") == "bpe":
        vocab = [bytes.fromhex(token) for token in state["vocab"]]
        return BPETokenizer(vocab, [tuple(p) for p in state["merges"]], dict(state["special"]))
    raise UserError(f"unknown tokenizer kind {state.get('kind')!r}")
