"""The generated French is correct, and the split and vocabulary behave."""

import pytest
from data import (
    CharVocab,
    WordVocab,
    english_number,
    french_date,
    french_number,
    generated_pairs,
    split_by_source,
    split_pairs,
)
from metrics import tokenize_13a

from shared.errors import UserError

FRENCH = {
    0: "zéro",
    1: "un",
    16: "seize",
    17: "dix-sept",
    21: "vingt et un",
    22: "vingt-deux",
    61: "soixante et un",
    70: "soixante-dix",
    71: "soixante et onze",
    77: "soixante-dix-sept",
    80: "quatre-vingts",
    81: "quatre-vingt-un",
    91: "quatre-vingt-onze",
    99: "quatre-vingt-dix-neuf",
    100: "cent",
    101: "cent un",
    200: "deux cents",
    201: "deux cent un",
    280: "deux cent quatre-vingts",
    342: "trois cent quarante-deux",
    1000: "mille",
    1001: "mille un",
    1999: "mille neuf cent quatre-vingt-dix-neuf",
    2000: "deux mille",
    2100: "deux mille cent",
    9871: "neuf mille huit cent soixante et onze",
}


@pytest.mark.parametrize("n, expected", sorted(FRENCH.items()))
def test_french_number_matches_a_table_of_known_spellings(n, expected):
    assert french_number(n) == expected


def test_english_number_is_written_american_style():
    assert english_number(342) == "three hundred forty-two"
    assert english_number(1999) == "one thousand nine hundred ninety-nine"
    assert english_number(7000) == "seven thousand"


def test_french_dates_use_premier_for_the_first():
    assert french_date(1, 5) == "le premier mai"
    assert french_date(14, 7) == "le quatorze juillet"


def test_held_out_split_is_fixed_and_disjoint():
    pairs = generated_pairs(n_sentences=200)
    train, test = split_pairs(pairs)
    train2, test2 = split_pairs(pairs)
    assert test == test2 and train == train2
    assert not set(test) & set(train)
    assert len(train) + len(test) == len(pairs)


def test_vocabulary_round_trips_and_names_unknown_characters():
    vocab = CharVocab.build(["abc d"])
    assert vocab.decode(vocab.encode("a cab") + [vocab.eos_id, 4]) == "a cab"
    with pytest.raises(UserError, match="'xé'"):
        vocab.encode("abxé")


def test_word_vocabulary_splits_as_bleu_does_and_drops_unknown_words_from_its_output():
    vocab = WordVocab.build(["il est parti très loin.", "oui, merci !", "il est là."], 2)
    assert vocab.symbols == [".", "est", "il"]  # words seen at least twice
    ids = vocab.encode("il est loin.")
    assert ids == [vocab.stoi["il"], vocab.stoi["est"], vocab.unk_id, vocab.stoi["."]]
    assert vocab.decode([*ids, vocab.eos_id, vocab.stoi["il"]]) == "il est."
    every_word = WordVocab.build(["oui, merci 12. l'homme va !"], 1)
    text = "oui, merci 12. l'homme va !"
    assert tokenize_13a(every_word.decode(every_word.encode(text))) == tokenize_13a(text)


def test_held_out_english_sentences_keep_every_french_translation_and_are_never_trained_on():
    pairs = [(f"s{i % 40}", f"f{i}") for i in range(120)]  # 40 sentences, 3 translations each
    train, test = split_by_source(pairs)
    assert len(test) == 4 and all(len(refs) == 3 for _, refs in test)
    assert {en for en, _ in test}.isdisjoint(en for en, _ in train)
    assert sorted(train + [(en, fr) for en, refs in test for fr in refs]) == sorted(pairs)
    generated = generated_pairs(n_sentences=200)  # distinct English: as split_pairs splits it
    train, test = split_by_source(generated)
    assert (train, [(en, fr) for en, (fr,) in test]) == split_pairs(generated)
