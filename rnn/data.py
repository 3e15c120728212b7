"""Characters to ids, batches for truncated BPTT on a long text, padded batches of names, baselines.

Two ways to feed a recurrent net:
- a long text (char-rnn): cut the stream into B parallel rows and walk along them in windows of
  T characters; each window starts from the state the previous window ended in (truncated BPTT).
- names (makemore): one name per sequence, from a fresh state, backpropagated end to end (full
  BPTT). A newline is both the start token (the first input) and the end token (the last target).
"""

from __future__ import annotations

import numpy as np

from shared.errors import DataError, UserError

BOUNDARY = "\n"  # start and end of a name; in a text it is just a line break


class Vocabulary:
    """The sorted set of characters; id = position in that order."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted({ch for ch in text if ch not in self.index})
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown)
            raise UserError(f"characters not in the vocabulary: {shown}")
        return np.array([self.index[ch] for ch in text], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


class TextBatches:
    """Consecutive (B, T) windows of B parallel streams; window k+1 continues window k.

    The text is cut into B rows of equal length (row b is the b-th contiguous slice of the
    text), so row b of window k+1 is the continuation of row b of window k, and carrying the
    last hidden state over between windows is the right thing to do.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int):
        row = (len(ids) - 1) // batch_size
        self.n_windows = row // seq_len
        if self.n_windows < 1:
            raise DataError(
                f"text of {len(ids)} characters is too short for --batch-size {batch_size} "
                f"x --seq-len {seq_len}"
            )
        usable = self.n_windows * seq_len
        self.inputs = np.stack([ids[b * row : b * row + usable] for b in range(batch_size)])
        self.targets = np.stack(
            [ids[b * row + 1 : b * row + usable + 1] for b in range(batch_size)]
        )
        self.seq_len = seq_len

    def window(self, k: int):
        """Window k mod n_windows: inputs and next-character targets, each (B, T)."""
        k %= self.n_windows
        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return self.inputs[:, cols], self.targets[:, cols]


def pad_names(names: list[str], vocab: Vocabulary):
    """Inputs BOUNDARY + name, targets name + BOUNDARY, padded to the longest; -1 = no target."""
    longest = max(len(name) for name in names) + 1
    start = vocab.index[BOUNDARY]
    inputs = np.full((len(names), longest), start, dtype=np.int64)
    targets = np.full((len(names), longest), -1, dtype=np.int64)
    for row, name in enumerate(names):
        ids = vocab.encode(BOUNDARY + name + BOUNDARY)
        inputs[row, : len(ids) - 1] = ids[:-1]
        targets[row, : len(ids) - 1] = ids[1:]
    return inputs, targets


def unigram_bigram_losses(train_ids, val_ids, vocab_size: int) -> tuple[float, float]:
    """Validation loss (nats per character) of add-one smoothed unigram and bigram counts.

    The unigram model predicts p(c) from character frequencies; the bigram p(c | previous c).
    A recurrent net that has learned anything about context must beat both.
    """
    unigram = np.bincount(train_ids, minlength=vocab_size) + 1.0
    unigram_loss = -np.log(unigram[val_ids] / unigram.sum()).mean()
    bigram = np.ones((vocab_size, vocab_size))
    np.add.at(bigram, (train_ids[:-1], train_ids[1:]), 1.0)
    bigram /= bigram.sum(axis=1, keepdims=True)
    bigram_loss = -np.log(bigram[val_ids[:-1], val_ids[1:]]).mean()
    return float(unigram_loss), float(bigram_loss)


# ----------------------------------------------------------------------------- ids back to text


def sample_text(model, vocab, prompt, length, rng, temperature=1.0, top_k=0) -> str:
    """The prompt followed by `length` sampled characters (a line break primes an empty prompt)."""
    prefix = prompt if prompt else BOUNDARY if BOUNDARY in vocab.index else vocab.chars[0]
    out = model.generate(vocab.encode(prefix), length, rng, temperature, top_k)
    return prompt + vocab.decode(out)


def sample_names(model, vocab, start, count, rng, temperature=1.0, top_k=0, max_len=40):
    """`count` names that begin with `start` (may be empty), each ended by the end token."""
    prefix = vocab.encode(BOUNDARY + start)
    stop = vocab.index[BOUNDARY]
    return [
        start + vocab.decode(model.generate(prefix, max_len, rng, temperature, top_k, stop=stop))
        for _ in range(count)
    ]
