"""The data: English -> French pairs made by rule, five-topic sentences, and real files.

Nothing here is downloaded unless asked: the default pairs are generated (numbers written in
words, dates, templated sentences), with a held-out split that never changes; real sentence
pairs come from a tab-separated file (`--pairs-file`) or the standard eng-fra file
(`--dataset eng-fra`).
"""

from __future__ import annotations

import csv
import random
import re
import zipfile
from collections import Counter
from pathlib import Path

from shared.data import download, resolve_data_dir
from shared.errors import DataError, UserError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPLIT_SEED = 1234  # the held-out split is fixed, whatever --seed says

# ----------------------------------------------------------------------------- numbers

EN_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen".split()
EN_ONES += "fourteen fifteen sixteen seventeen eighteen nineteen".split()
EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
FR_ONES = "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize".split()
FR_ONES += "quatorze quinze seize dix-sept dix-huit dix-neuf".split()
FR_TENS = "_ _ vingt trente quarante cinquante soixante".split()


def english_number(n: int) -> str:
    """American style, no 'and': 342 -> 'three hundred forty-two'."""
    if n < 20:
        return EN_ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return EN_TENS[tens] + (f"-{EN_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{EN_ONES[hundreds]} hundred" + (f" {english_number(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{english_number(thousands)} thousand" + (f" {english_number(rest)}" if rest else "")


def _french_below_100(n: int) -> str:
    """French counts in twenties above sixty: 70 = soixante-dix, 80 = quatre-vingts, 90 =
    quatre-vingt-dix; 'et' joins un (and onze after soixante) except after quatre-vingt."""
    if n < 20:
        return FR_ONES[n]
    if n < 70:
        tens, ones = divmod(n, 10)
        if ones == 0:
            return FR_TENS[tens]
        return FR_TENS[tens] + (" et un" if ones == 1 else f"-{FR_ONES[ones]}")
    if n < 80:  # soixante + 10..19
        return "soixante et onze" if n == 71 else f"soixante-{FR_ONES[n - 60]}"
    if n == 80:
        return "quatre-vingts"  # the plural s only when nothing follows
    return f"quatre-vingt-{FR_ONES[n - 80]}"  # 81 quatre-vingt-un, 91 quatre-vingt-onze


def french_number(n: int) -> str:
    """Traditional spelling (hyphens below cent): 1999 -> 'mille neuf cent quatre-vingt-dix-neuf'.

    cent takes an s when multiplied and last (deux cents, but deux cent un); mille never does,
    and is never preceded by un; before mille, cents and quatre-vingts lose their s.
    """
    if n < 100:
        return _french_below_100(n)
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = "cent" if hundreds == 1 else f"{FR_ONES[hundreds]} cent"
        if rest:
            return f"{head} {_french_below_100(rest)}"
        return head if hundreds == 1 else head + "s"
    thousands, rest = divmod(n, 1000)
    if thousands == 1:
        head = "mille"
    else:
        head = french_number(thousands)
        if head.endswith("cents") or head.endswith("vingts"):
            head = head[:-1]
        head += " mille"
    return head + (f" {french_number(rest)}" if rest else "")


# ----------------------------------------------------------------------------- dates

MONTHS_EN = "january february march april may june july august september october november december"
MONTHS_FR = "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def english_date(day: int, month: int) -> str:
    return f"{MONTHS_EN.split()[month - 1]} {english_number(day)}"  # may twenty-one


def french_date(day: int, month: int) -> str:
    day_fr = "premier" if day == 1 else french_number(day)  # le premier mai, le deux mai
    return f"le {day_fr} {MONTHS_FR.split()[month - 1]}"


# ----------------------------------------------------------------------------- sentences

# (english, french, gender); adjectives: (english, masculine, feminine, goes before the noun)
NOUNS = [
    ("cat", "chat", "m"),
    ("dog", "chien", "m"),
    ("bird", "oiseau", "m"),
    ("horse", "cheval", "m"),
    ("boy", "garçon", "m"),
    ("girl", "fille", "f"),
    ("woman", "femme", "f"),
    ("car", "voiture", "f"),
    ("house", "maison", "f"),
    ("apple", "pomme", "f"),
    ("book", "livre", "m"),
    ("table", "table", "f"),
]
ADJECTIVES = [
    ("small", "petit", "petite", True),
    ("big", "grand", "grande", True),
    ("old", "vieux", "vieille", True),
    ("red", "rouge", "rouge", False),
    ("black", "noir", "noire", False),
    ("white", "blanc", "blanche", False),
    ("green", "vert", "verte", False),
]
VERBS = [("sees", "voit"), ("likes", "aime"), ("eats", "mange"), ("follows", "suit")]


def _noun_phrase(rng: random.Random) -> tuple[str, str]:
    """'the small red cat' -> 'le petit chat rouge': size before, colour after, agreement."""
    en_noun, fr_noun, gender = rng.choice(NOUNS)
    adjective = rng.choice([None, *ADJECTIVES])
    article = "le" if gender == "m" else "la"
    if adjective is None:
        return f"the {en_noun}", f"{article} {fr_noun}"
    en_adj, fr_m, fr_f, before = adjective
    fr_adj = fr_m if gender == "m" else fr_f
    if before:
        return f"the {en_adj} {en_noun}", f"{article} {fr_adj} {fr_noun}"
    return f"the {en_adj} {en_noun}", f"{article} {fr_noun} {fr_adj}"


def random_sentence(rng: random.Random) -> tuple[str, str]:
    subject_en, subject_fr = _noun_phrase(rng)
    verb_en, verb_fr = rng.choice(VERBS)
    object_en, object_fr = _noun_phrase(rng)
    return f"{subject_en} {verb_en} {object_en}", f"{subject_fr} {verb_fr} {object_fr}"


def generated_pairs(n_sentences: int = 6000) -> list[tuple[str, str]]:
    """Every number 0..9999, every date of the year, and n_sentences distinct sentences."""
    pairs = [(english_number(n), french_number(n)) for n in range(10000)]
    pairs += [
        (english_date(d, m), french_date(d, m))
        for m in range(1, 13)
        for d in range(1, DAYS_IN_MONTH[m - 1] + 1)
    ]
    rng, sentences = random.Random(SPLIT_SEED), {}
    while len(sentences) < n_sentences:
        en, fr = random_sentence(rng)
        sentences[en] = fr
    return pairs + sorted(sentences.items())


def split_pairs(items: list, test_fraction: float = 0.1, max_test: int = 1000):
    """A fixed held-out split: the same shuffle (SPLIT_SEED) every run."""
    order = list(range(len(items)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_test = min(max_test, max(1, round(len(items) * test_fraction)))
    test = [items[i] for i in order[:n_test]]
    train = [items[i] for i in order[n_test:]]
    return train, test


def split_by_source(pairs: list[tuple[str, str]], max_test: int = 1000):
    """Held-out English sentences with every French translation of each as its references.

    The split is over distinct English sentences (split_pairs on them, so a file whose English
    sentences are all distinct, like the generated pairs, splits exactly as split_pairs would):
    no English sentence is both trained on and tested. Returns the training pairs and the test
    list of (english, [french, ...]).
    """
    translations = dict(group_by_source(pairs))
    train_sources, test_sources = split_pairs(list(translations), max_test=max_test)
    train = [(en, fr) for en in train_sources for fr in translations[en]]
    return train, [(en, translations[en]) for en in test_sources]


def group_by_source(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(english, [every french translation of it]), in the order the sentences first appear."""
    translations: dict[str, list[str]] = {}
    for en, fr in pairs:
        translations.setdefault(en, []).append(fr)
    return list(translations.items())


# ----------------------------------------------------------------------------- real pairs

ENG_FRA_URL = "https://download.pytorch.org/tutorial/data.zip"  # data/eng-fra.txt inside
NO_BREAK = str.maketrans({"\u00a0": " ", "\u202f": " "})


def read_pairs_file(path: str | Path, max_chars: int) -> list[tuple[str, str]]:
    """English<TAB>French lines (Tatoeba / manythings.org format; extra columns ignored).

    Text is lower-cased, and the no-break spaces French puts before ! ? : ; become plain
    spaces; pairs longer than max_chars on either side are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pairs file {path} does not exist")
    pairs = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"pairs file {path} is not UTF-8 text (byte {err.start}): expected English<TAB>French"
        ) from None
    for number, line in enumerate(text.split("\n"), 1):
        columns = line.rstrip("\r").split("\t")
        if len(columns) < 2:
            if line.strip():
                raise DataError(f"{path}:{number}: expected English<TAB>French, got {line!r}")
            continue
        en, fr = (column.translate(NO_BREAK).strip().lower() for column in columns[:2])
        if en and fr and len(en) <= max_chars and len(fr) <= max_chars:
            pairs.append((en, fr))
    if len(pairs) < 2:
        raise DataError(f"{path} has fewer than 2 pairs of at most {max_chars} characters")
    return pairs


def eng_fra_file(data_dir: str) -> Path:
    """<data_dir>/eng-fra/eng-fra.txt, downloaded (from PyTorch's tutorial data) on first use."""
    folder = resolve_data_dir(data_dir) / "eng-fra"
    target = folder / "eng-fra.txt"
    if not target.exists():
        try:
            archive = download(ENG_FRA_URL, folder / "data.zip", what="the eng-fra pairs")
        except DataError:
            raise DataError(
                f"no {target} and no network: place there the English<TAB>French pairs "
                "(Tatoeba's eng-fra.txt or manythings.org's fra.txt, one pair a line)"
            ) from None
        try:
            with zipfile.ZipFile(archive) as zf:
                target.write_bytes(zf.read("data/eng-fra.txt"))
        except (zipfile.BadZipFile, KeyError):
            raise DataError(
                f"{archive} is not the expected archive; place eng-fra.txt at {target}"
            ) from None
    return target


# ----------------------------------------------------------------------------- topics

TOPICS = ("technology", "sports", "science", "music", "food")
TOPIC_WORDS = {
    "technology": "computer software laptop phone internet robot chip app network code server",
    "sports": "football tennis match team goal coach stadium player race score league",
    "science": "atom molecule experiment theory physics biology cell planet energy lab gene",
    "music": "guitar piano song concert band melody rhythm singer album drum orchestra",
    "food": "pizza bread cheese soup recipe salad chef dinner kitchen pasta fruit",
}
SUBJECTS = "the new|my friend's|a famous|our local|this|that old|every|the best".split("|")
TOPIC_TEMPLATES = [
    "{a} {x} was better than the {y}",
    "i read about {a} {x} and the {y} today",
    "people talk about {a} {x} near the {y}",
    "{a} {x} needs a {y}",
    "yesterday we saw {a} {x} with a {y}",
    "is {a} {x} more important than the {y}",
]


def topic_sentence(rng: random.Random, topic: str) -> str:
    words = TOPIC_WORDS[topic].split()
    x, y = rng.sample(words, 2)
    return rng.choice(TOPIC_TEMPLATES).format(a=rng.choice(SUBJECTS), x=x, y=y)


def generated_topics(n: int = 6000) -> list[tuple[str, int]]:
    """n distinct (sentence, topic index) pairs, the topics in equal shares."""
    rng, seen, items = random.Random(SPLIT_SEED), set(), []
    while len(items) < n:
        label = len(items) % len(TOPICS)
        text = topic_sentence(rng, TOPICS[label])
        if text not in seen:
            seen.add(text)
            items.append((text, label))
    return items


def read_labelled_csv(path: str | Path) -> tuple[list[tuple[str, int]], list[str]]:
    """label,text rows (a header row 'label,text' is skipped) -> items and the label names."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["label", "text"]:
        rows = rows[1:]
    bad = [i for i, row in enumerate(rows, 1) if len(row) < 2]
    if bad:
        raise DataError(f"{path}: row {bad[0]} is not label,text")
    names = sorted({row[0].strip() for row in rows})
    if len(names) < 2 or len(rows) < 10:
        raise DataError(f"{path} needs at least 2 labels and 10 rows")
    index = {name: i for i, name in enumerate(names)}
    return [(",".join(row[1:]).strip().lower(), index[row[0].strip()]) for row in rows], names


# ----------------------------------------------------------------------------- vocabularies


class CharVocab:
    """Characters <-> ids; ids 0, 1, 2 are pad, bos, eos."""

    kind = "chars"

    def __init__(self, symbols: list[str]):
        self.itos = [PAD, BOS, EOS, *symbols]
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        self.first_id = 3  # the first id of a real character

    @classmethod
    def build(cls, texts) -> CharVocab:
        return cls(sorted(set("".join(texts))))

    @property
    def symbols(self) -> list[str]:
        return self.itos[self.first_id :]

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.symbols))
        if unknown:
            raise UserError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= self.first_id:
                out.append(self.itos[i])
        return "".join(out)


class WordVocab(CharVocab):
    """Words <-> ids, for real sentences: a text is split as BLEU splits it (mteval-v13a: each
    punctuation mark a word of its own), words seen fewer than min_count times in training
    become unk, and an output is its words joined by spaces (unk words left out), which BLEU
    splits back into the same words. ids 0-3 are pad, bos, eos, unk."""

    kind = "words"

    def __init__(self, symbols: list[str]):
        super().__init__([UNK, *symbols])
        self.unk_id, self.first_id = 3, 4

    @classmethod
    def build(cls, texts, min_count: int = 2) -> WordVocab:
        from metrics import tokenize_13a

        counts = Counter(word for text in texts for word in tokenize_13a(text))
        return cls(sorted(word for word, count in counts.items() if count >= min_count))

    def encode(self, text: str) -> list[int]:
        from metrics import tokenize_13a

        return [self.stoi.get(word, self.unk_id) for word in tokenize_13a(text)]

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= self.first_id:
                out.append(self.itos[i])
        return re.sub(r" ([.,])(?= |$)", r"\1", " ".join(out))  # "loin ." -> "loin."


VOCABULARIES = {"chars": CharVocab, "words": WordVocab}


def vocabulary(kind: str, symbols: list[str]) -> CharVocab:
    """The vocabulary a checkpoint stored: its kind and its symbols (after the special ids)."""
    return VOCABULARIES[kind](list(symbols))


# ----------------------------------------------------------------------------- batches


def pad_batch(sequences: list[list[int]], pad_id: int, device):
    """Lists of ids -> (B, L) padded on the right with pad_id to the longest."""
    import torch

    L = max(len(s) for s in sequences)
    return torch.tensor([s + [pad_id] * (L - len(s)) for s in sequences], device=device)


def translation_batch(pairs, vocab: CharVocab, device):
    """src (B, S); decoder input bos + target (B, T); targets target + eos (B, T)."""
    src = pad_batch([vocab.encode(en) for en, _ in pairs], vocab.pad_id, device)
    tgt = [vocab.encode(fr) for _, fr in pairs]
    tgt_in = pad_batch([[vocab.bos_id, *t] for t in tgt], vocab.pad_id, device)
    tgt_out = pad_batch([[*t, vocab.eos_id] for t in tgt], vocab.pad_id, device)
    return src, tgt_in, tgt_out


def text_windows(text: str, length: int, starts) -> list[str]:
    """The windows text[s : s + length] for each start s (masked-language-model examples)."""
    return [text[s : s + length] for s in starts]


def pretraining_text(name: str, data_dir: str = "") -> tuple[str, str]:
    """Unlabelled text for masked-language-model pre-training, lower-cased, whitespace runs
    as single spaces (as the topic sentences are written): the training and held-out parts."""
    from shared.data import load_text, split_text

    return split_text(" ".join(load_text(name, data_dir).lower().split()))
