import numpy as np
import pytest
from data import (
    CORNERS,
    CaptionedDigits,
    Tokenizer,
    canonical_prompt,
    caption,
    crop_corner,
    ink_corner,
)

from shared.errors import UserError


def test_every_caption_wording_fits_the_tokenizer():
    tokenizer = Tokenizer()
    rng = np.random.default_rng(0)
    for _ in range(500):
        ids, mask = tokenizer.encode(caption(rng.integers(10), rng.integers(4), rng))
        assert ids[0] == 1 and mask.sum() >= 4 and np.all(ids[~mask] == 0)


def test_captions_name_the_digit_and_the_corner():
    rng = np.random.default_rng(1)
    for _ in range(50):
        text = caption(7, 1, rng)
        assert ("seven" in text or "7" in text) and "right" in text
        assert "top" in text or "upper" in text


def test_unknown_words_are_named_in_the_error():
    with pytest.raises(UserError, match="does not know: dog, purple"):
        Tokenizer().encode("a purple dog in the top left corner")


@pytest.mark.parametrize("prompt", ["\u2603 !!", "digit two \u2603", "a handwritten s\u00e9ven"])
def test_characters_outside_the_vocabulary_are_named_never_dropped(prompt):
    with pytest.raises(UserError, match="characters the tokenizer does not know: '[\u2603\u00e9]'"):
        Tokenizer().encode(prompt)


def test_punctuation_between_words_is_accepted():
    ids, _ = Tokenizer().encode("The number 7, upper-left!")
    assert list(ids[:6]) == list(Tokenizer().encode("the number 7 upper left")[0][:6])


def test_too_long_prompt_is_an_error():
    with pytest.raises(UserError, match="too long"):
        Tokenizer().encode(" ".join(["seven"] * 20))


def test_placed_digits_sit_in_their_corner():
    data = CaptionedDigits("test")
    images, captions, digits, corners = data.sample(40, np.random.default_rng(2))
    assert images.shape == (40, 1, 24, 24) and len(captions) == 40
    np.testing.assert_array_equal(ink_corner(images), corners)
    crops = crop_corner(images, corners)
    np.testing.assert_allclose(crops.sum(), images.sum(), rtol=1e-6)


def test_canonical_prompts_cover_all_corners():
    assert [canonical_prompt(3, c).split(" in the ")[1] for c in range(4)] == [
        f"{corner} corner" for corner in CORNERS
    ]


def test_a_shard_of_a_sample_is_that_part_of_the_whole_and_moves_rng_alike():
    data = CaptionedDigits("train")
    whole_rng, shard_rng = np.random.default_rng(3), np.random.default_rng(3)
    images, captions, digits, corners = data.sample(8, whole_rng)
    part = data.sample(8, shard_rng, keep=lambda batch: batch[4:8])  # rank 1 of 2
    np.testing.assert_array_equal(part[0], images[4:8])
    assert part[1] == captions[4:8]
    np.testing.assert_array_equal(part[2], digits[4:8])
    np.testing.assert_array_equal(part[3], corners[4:8])
    assert whole_rng.random() == shard_rng.random()  # the next global batch is the same too
