import json
import random
from collections import Counter

import pytest
from tokenizer import (
    PRE_SPLIT,
    BPETokenizer,
    CharTokenizer,
    bytes_to_unicode,
    merge_pair,
    tokenizer_from_state,
)

from shared.errors import DataError, UserError

CORPUS = "the cat sat on the mat. The hat! 12 cats, 345 hats; naïve café 東京\n\n  indented\tlines"


def test_bpe_learns_the_hand_checked_merges_of_aaabdaaabac():
    # aa is the most frequent pair (4); then ab and (aa)a tie at 2, and the smaller ids win
    # (a=97, b=98 before aa=256); then (aa)(ab) occurs twice. Wikipedia's example, by hand.
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=260)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.vocab[256:259] == [b"aa", b"ab", b"aaab"]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]


def test_bpe_round_trips_arbitrary_bytes_and_unicode():
    tok = BPETokenizer.train(CORPUS * 3, vocab_size=300)
    rng = random.Random(0)
    code_points = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]  # no surrogates
    random_text = "".join(chr(rng.choice(code_points)) for _ in range(300))
    for text in [random_text, "héllo wörld 日本語 🙂", CORPUS, "  <|endoftext|>x", "\x00\x7f"]:
        assert tok.decode(tok.encode(text)) == text
    # Any byte string, valid UTF-8 or not, is a sequence of byte tokens.
    raw = bytes(rng.randrange(256) for _ in range(500))
    assert tok.decode_bytes([tok.byte_id[b] for b in raw]) == raw


def merges_by_recounting(text: str, n_merges: int) -> list[tuple[int, int]]:
    """BPE training by its definition: recount every adjacent pair of every chunk before each
    merge (slow, obviously right), with the same tie-break as BPETokenizer.train."""
    words = [list(chunk.encode("utf-8")) for chunk in PRE_SPLIT.findall(text)]
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts = Counter(pair for word in words for pair in zip(word, word[1:]))
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        merges.append(best)
        words = [merge_pair(word, best, new_id) for word in words]
    return merges


@pytest.mark.parametrize("alphabet", ["ab ", "abc a\n", "aaaab ", "xyz .!é"])
def test_bpe_incremental_pair_counts_give_the_merges_of_a_full_recount(alphabet):
    # Small alphabets make runs like "aaaa", where merges overlap and counts change most.
    rng = random.Random(len(alphabet))
    text = "".join(rng.choice(alphabet) for _ in range(3000))
    learned = BPETokenizer.train(text, vocab_size=257 + 60)
    assert len(learned.merges) > 20
    assert learned.merges == merges_by_recounting(text, 60)


def test_pre_split_gives_gpt2s_chunks():
    text = "Hello world's 123 tests!!  ok\n"
    assert PRE_SPLIT.findall(text) == [
        "Hello",
        " world",
        "'s",
        " 123",
        " tests",
        "!!",
        " ",
        " ok",
        "\n",
    ]


def test_special_token_is_one_id_and_merges_never_cross_chunks():
    tok = BPETokenizer.train("ab ab ab ab", vocab_size=300)
    eot = tok.special["<|endoftext|>"]
    assert tok.encode("ab<|endoftext|>ab") == [tok.encode("ab")[0], eot, tok.encode("ab")[0]]
    assert all(b" " not in token[1:] for token in tok.vocab[256:eot])


def write_gpt2_files(folder):
    # A tiny vocabulary in OpenAI's format: spaces are written "Ġ".
    encoder = {"t": 0, "h": 1, "e": 2, "Ġ": 3, "Ġt": 4, "he": 5, "Ġthe": 6, "<|endoftext|>": 7}
    (folder / "encoder.json").write_text(json.dumps(encoder))
    (folder / "vocab.bpe").write_text("#version: 0.2\nĠ t\nh e\nĠt he\n")
    return BPETokenizer.from_gpt2_files(folder / "encoder.json", folder / "vocab.bpe")


def test_gpt2_format_files_give_the_hand_checked_tokens(tmp_path):
    tok = write_gpt2_files(tmp_path)
    assert tok.encode(" the the") == [6, 6]
    assert tok.encode("the") == [0, 5]  # no "Ġ": only "h e" applies
    assert tok.encode(" teh") == [4, 2, 1]  # "Ġ t" applies, "h e" is not adjacent in "eh"
    assert tok.encode("<|endoftext|> the") == [7, 6]
    assert tok.decode([6, 7, 0]) == " the<|endoftext|>t"


def test_gpt2_format_files_tokenize_like_hugging_faces_gpt2_tokenizer(tmp_path):
    """Our BPE learned on CORPUS, written in OpenAI's file format, read back by us and by
    transformers.GPT2Tokenizer: the same ids for any text (every byte is in the vocabulary)."""
    transformers = pytest.importorskip("transformers")
    learned = BPETokenizer.train(CORPUS, vocab_size=300)
    to_unicode = bytes_to_unicode()

    def spelled(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    encoder = {spelled(token): i for i, token in enumerate(learned.vocab)}
    encoder["<|endoftext|>"] = len(encoder)
    merges = [f"{spelled(learned.vocab[a])} {spelled(learned.vocab[b])}" for a, b in learned.merges]
    (tmp_path / "encoder.json").write_text(json.dumps(encoder))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    ours = BPETokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")
    theirs = transformers.GPT2Tokenizer(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))
    rng = random.Random(0)
    texts = [CORPUS, "The mat sat on the cat's hat, 2 times!", "ünïcödé 東京 \t tabs  and  spaces"]
    texts += ["".join(rng.choice(CORPUS) for _ in range(200)) for _ in range(5)]
    assert len(ours.encode(CORPUS)) < len(CORPUS.encode()) / 2  # the merges do apply
    for text in texts:
        assert ours.encode(text) == theirs.encode(text), text


def test_pre_split_treats_ascii_separators_as_gpt2_does(tmp_path):
    """\x1c-\x1f are whitespace to Python's `re` but not to GPT-2's `regex` pattern: with merges
    across " \x1c!", GPT2Tokenizer makes one token of it, and so must we."""
    transformers = pytest.importorskip("transformers")
    to_unicode = bytes_to_unicode()
    encoder = {to_unicode[b]: b for b in range(256)}
    merges = []
    for c in range(128):
        ch = to_unicode[c]
        merges += [f"{to_unicode[32]} {ch}", f"{to_unicode[32]}{ch} !"]
        encoder.setdefault(to_unicode[32] + ch, len(encoder))
        encoder.setdefault(to_unicode[32] + ch + "!", len(encoder))
    merges = list(dict.fromkeys(merges))
    encoder["<|endoftext|>"] = len(encoder)
    (tmp_path / "encoder.json").write_text(json.dumps(encoder))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    ours = BPETokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")
    theirs = transformers.GPT2Tokenizer(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))
    for c in range(128):
        for text in (f" {chr(c)}!", f"a{chr(c)} b {chr(c)}{chr(c)}!"):
            assert ours.encode(text) == theirs.encode(text), repr(text)


@pytest.mark.parametrize(
    "merges, message",
    [
        (
            "#version: 0.2\nĠ t\nh x\n",
            r"vocab.bpe line 3: 'h x' names a token not in .*encoder.json",
        ),
        ("#version: 0.2\nt t\n", r"vocab.bpe line 2: 't t' names a token not in"),  # "tt"
        ("#version: 0.2\nĠ t he\n", r"vocab.bpe line 2: expected two tokens, not 3"),
    ],
)
def test_gpt2_merges_with_a_bad_line_name_the_file_and_line(tmp_path, merges, message):
    write_gpt2_files(tmp_path)
    (tmp_path / "vocab.bpe").write_text(merges)
    with pytest.raises(DataError, match=message):
        BPETokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")


def test_bytes_to_unicode_is_gpt2s_printable_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"


def test_tokenizers_survive_their_checkpoint_state():
    bpe = BPETokenizer.train(CORPUS, vocab_size=280)
    char = CharTokenizer.train(CORPUS)
    for tok in (bpe, char):
        again = tokenizer_from_state(tok.state())
        assert again.encode(CORPUS) == tok.encode(CORPUS)


def test_char_tokenizer_rejects_unknown_characters():
    tok = CharTokenizer.train("abc")
    assert tok.decode(tok.encode("cab")) == "cab"
    with pytest.raises(UserError, match="'xz'"):
        tok.encode("axbz")
