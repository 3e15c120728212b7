"""How good a translation is: exact match, character error rate, and corpus BLEU, by hand.

BLEU (Papineni et al., 2002) follows what `sacrebleu.corpus_bleu` computes with its defaults
(tested equal to 1e-6): the mteval-v13a tokenisation, clipped n-gram counts against every
reference of a sentence, the reference length closest to the hypothesis for the brevity
penalty, and the "exp" smoothing of an n-gram order that has no match at all.
"""

from __future__ import annotations

import math
import re
from collections import Counter

# mteval-v13a: ASCII symbols become words of their own, except the apostrophe, the hyphen, and
# the period and comma, which split off only when not inside a number ("3.5", "1,000").
_SYMBOLS = re.compile("([" + re.escape('!"#$%&()*+/:;<=>?@[\\]^_`{|}~') + "])")
_POINT_AFTER_NON_DIGIT = re.compile(r"([^0-9])([.,])")
_POINT_BEFORE_NON_DIGIT = re.compile(r"([.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")


def tokenize_13a(line: str) -> list[str]:
    """The words BLEU counts, as WMT's mteval-v13a script splits them."""
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
        line = line.replace(entity, char)
    line = _SYMBOLS.sub(r" \1 ", f" {line} ")
    line = _POINT_AFTER_NON_DIGIT.sub(r"\1 \2 ", line)
    line = _POINT_BEFORE_NON_DIGIT.sub(r" \1 \2", line)
    line = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", line)
    return line.split()


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(hypotheses: list[str], references: list, max_n: int = 4) -> float:
    """Corpus BLEU, 0-100: BP * exp(mean_n log p_n).

    references[i] is one string or a list of strings (every accepted translation of sentence
    i). p_n = sum of clipped matches / sum of hypothesis n-grams over the corpus, a match of an
    n-gram clipped to its largest count in any one reference; BP = min(1, exp(1 - r / c)) with
    c the hypothesis words and r, per sentence, the closest reference length (the shorter on a
    tie). An order with no match gets p_n = 1 / (2^k total_n), k counting such orders.
    """
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        refs = [refs] if isinstance(refs, str) else refs
        h = tokenize_13a(hypothesis)
        r = [tokenize_13a(ref) for ref in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(words) - len(h)), len(words)) for words in r)[1]
        for n in range(1, max_n + 1):
            best = Counter()
            for words in r:
                best |= ngrams(words, n)  # the largest count of each n-gram in one reference
            matches[n - 1] += sum(min(c, best[g]) for g, c in ngrams(h, n).items())
            totals[n - 1] += max(0, len(h) - n + 1)
    if sum(matches) == 0:
        return 0.0
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    log_precisions, halvings = [], 1.0
    for m, t in zip(matches, totals):
        if t == 0:  # no hypothesis this long: the orders left count as log(0) would, skipped
            log_precisions.append(-math.inf)
            continue
        if m == 0:
            halvings *= 2
        log_precisions.append(math.log((m if m else 1 / halvings) / t))
    if -math.inf in log_precisions:
        return 0.0
    return 100.0 * brevity * math.exp(sum(log_precisions) / max_n)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(hypotheses: list[str], references: list) -> float:
    """Edits to the nearest reference, summed over the corpus, per character of that reference."""
    edits = length = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        refs = [refs] if isinstance(refs, str) else refs
        distance, ref = min((edit_distance(hypothesis, ref), ref) for ref in refs)
        edits, length = edits + distance, length + len(ref)
    return edits / max(1, length)


def same_words(hypothesis: str, references: list[str]) -> bool:
    """Whether the hypothesis has the words of one of the references (spacing aside)."""
    words = tokenize_13a(hypothesis)
    return any(words == tokenize_13a(ref) for ref in references)


def translation_scores(hypotheses: list[str], references: list) -> dict:
    """exact_match (the words of one of the references), cer and bleu of a corpus."""
    refs = [[r] if isinstance(r, str) else r for r in references]
    exact = sum(same_words(h, r) for h, r in zip(hypotheses, refs, strict=True))
    return {
        "exact_match": exact / max(1, len(refs)),
        "cer": character_error_rate(hypotheses, refs),
        "bleu": corpus_bleu(hypotheses, refs),
    }


# ----------------------------------------------------------------------------- a model's scores


def translate_sentences(model, sentences: list[str], vocab, device, batch_size: int = 250):
    """Greedy translations of many sentences, batch_size at a time."""
    import torch
    from data import pad_batch

    hypotheses = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            ids = [vocab.encode(s) for s in sentences[i : i + batch_size]]
            tokens, _ = model.greedy_decode(
                pad_batch(ids, vocab.pad_id, device), max_len=model.cfg.max_len - 1
            )
            hypotheses += [vocab.decode(row.tolist()) for row in tokens]
    return hypotheses


def evaluate_translation(model, test, vocab, device) -> dict:
    """test: (english, [french, ...]) -> exact_match, cer, bleu, val_loss (nats per character
    of the first reference), and the hypotheses."""
    import torch
    from data import translation_batch

    was_training = model.training
    model.eval()
    hypotheses = translate_sentences(model, [en for en, _ in test], vocab, device)
    total = count = 0.0
    with torch.no_grad():  # the cross-entropy of the first reference, read by teacher forcing
        for i in range(0, len(test), 250):
            pairs = [(en, refs[0]) for en, refs in test[i : i + 250]]
            src, tgt_in, tgt_out = translation_batch(pairs, vocab, device)
            n = int((tgt_out != vocab.pad_id).sum())
            total, count = total + float(model(src, tgt_in, tgt_out)[1]) * n, count + n
    model.train(was_training)
    scores = translation_scores(hypotheses, [refs for _, refs in test])
    return {**scores, "val_loss": total / count, "hypotheses": hypotheses}


def evaluate_classifier(model, items, vocab, device, batch_size: int = 250) -> dict:
    """items: (text, label) -> accuracy and val_loss (cross-entropy per text)."""
    import torch
    from data import pad_batch

    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            tokens = pad_batch([vocab.encode(t) for t, _ in chunk], vocab.pad_id, device)
            labels = torch.tensor([label for _, label in chunk], device=device)
            logits, loss = model(tokens, labels)
            correct += int((logits.argmax(dim=-1) == labels).sum())
            loss_sum += float(loss) * len(chunk)
    model.train(was_training)
    return {"accuracy": correct / len(items), "val_loss": loss_sum / len(items)}


def evaluate_masked_language_model(model, windows, vocab, device, seed: int = 0) -> dict:
    """masked_accuracy: the share of the selected (15%) characters predicted right, and the
    loss on them, with a fixed corruption of the held-out windows."""
    import torch
    from data import pad_batch
    from model import mask_tokens

    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = selected = 0
    loss_sum = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), 250):
            ids = [vocab.encode(w) for w in windows[i : i + 250]]
            tokens = pad_batch(ids, vocab.pad_id, device)
            corrupted, targets = mask_tokens(
                tokens, generator, vocab.first_id, vocab.bos_id, len(vocab), vocab.pad_id
            )
            logits, loss = model(corrupted, targets)
            scored = targets != vocab.pad_id
            n = int(scored.sum())
            correct += int((logits.argmax(-1) == targets)[scored].sum())
            selected += n
            loss_sum += float(loss) * n
    model.train(was_training)
    selected = max(1, selected)
    return {"masked_accuracy": correct / selected, "masked_loss": loss_sum / selected}
