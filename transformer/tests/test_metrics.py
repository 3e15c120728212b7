"""The translation metrics against hand-worked values and against sacrebleu."""

import math
import random

import pytest
from metrics import character_error_rate, corpus_bleu, edit_distance, tokenize_13a

sacrebleu = pytest.importorskip("sacrebleu")


def test_edit_distance_and_character_error_rate_on_hand_worked_cases():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert character_error_rate(["abc", "xy"], ["abd", "xyz"]) == 2 / 6
    # against the nearest of two references: "xy" is 0 edits from "xy", and 2 from "xyz" counts 3
    assert character_error_rate(["abc", "xy"], [["abd"], ["xyzw", "xy"]]) == 1 / 5


def test_bleu_is_100_for_identical_text_and_matches_a_hand_worked_score():
    text = ["le petit chat voit la voiture rouge"]
    assert math.isclose(corpus_bleu(text, text), 100.0)
    # 5 words against 6: clipped n-gram precisions 4/5, 3/4, 2/3, 1/2; brevity exp(1 - 6/5).
    hyp, ref = ["a b c d e"], ["a b c d x f"]
    p = [4 / 5, 3 / 4, 2 / 3, 1 / 2]
    expected = 100 * math.exp(1 - 6 / 5) * math.exp(sum(map(math.log, p)) / 4)
    assert math.isclose(corpus_bleu(hyp, ref), expected, rel_tol=1e-12)


def _random_french(rng: random.Random) -> str:
    words = "le la les chat chien voit mange il elle est très grand petite 12 3,5 1.000".split()
    marks = ["", "", " !", " ?", ".", ",", " :", "-ce", "'s", " (oui)", ' "non"', " &amp;"]
    return " ".join(rng.choice(words) + rng.choice(marks) for _ in range(rng.randint(1, 12)))


def _sacrebleu(hypotheses, references):
    """sacrebleu wants reference streams: stream k holds every sentence's k-th reference."""
    width = max(len(r) for r in references)
    streams = [[r[k] if k < len(r) else None for r in references] for k in range(width)]
    return sacrebleu.corpus_bleu(hypotheses, streams).score


CORPORA = {
    "one sentence, one reference": (["the cat sat on the mat ."], [["the cat is on the mat ."]]),
    "an empty hypothesis among others": (
        ["", "il est grand .", "la voiture rouge"],
        [["elle est là"], ["il est très grand ."], ["la voiture est rouge"]],
    ),
    "every hypothesis empty": (["", ""], [["a b c"], ["d e"]]),
    "one-word hypotheses": (["oui", "non", "chat"], [["oui"], ["non merci"], ["le chat"]]),
    "no four-gram matches": (["a b c d e f"], [["a b c x d e f"]]),
    "several references, the closest length wins": (
        ["va !", "je suis là, 3,5 fois.", "qui est-ce ?"],
        [["va !", "file !", "allez-y !"], ["je suis ici.", "j'y suis 3,5 fois."], ["qui ?"]],
    ),
    "longer than every reference": (["a a a a a a a a"], [["a a", "a a a"]]),
}


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_bleu_equals_sacrebleu_corpus_bleu(name):
    hypotheses, references = CORPORA[name]
    assert math.isclose(
        corpus_bleu(hypotheses, references), _sacrebleu(hypotheses, references), abs_tol=1e-6
    )


def test_bleu_equals_sacrebleu_on_random_corpora_with_punctuation_and_many_references():
    rng = random.Random(0)
    for _ in range(30):
        n = rng.randint(1, 8)
        hypotheses = [_random_french(rng) if rng.random() > 0.1 else "" for _ in range(n)]
        references = [[_random_french(rng) for _ in range(rng.randint(1, 4))] for _ in range(n)]
        ours, theirs = corpus_bleu(hypotheses, references), _sacrebleu(hypotheses, references)
        assert math.isclose(ours, theirs, abs_tol=1e-6), (hypotheses, references)


def test_tokenisation_equals_sacrebleus_13a():
    rng = random.Random(1)
    tokenizer = sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()
    for line in [_random_french(rng) for _ in range(200)] + ["a-b 3-4 x.y 1.5 (a)[b]{c}"]:
        assert tokenize_13a(line) == tokenizer(line.rstrip()).split(), line
