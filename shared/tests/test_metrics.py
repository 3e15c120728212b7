import numpy as np
import pytest
import scipy.linalg

from shared.data import load_images
from shared.metrics import frechet_distance, get_judge, judge_path, train_network


def _reference_frechet(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_matches_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6))
    b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.5
    assert frechet_distance(a, b) == pytest.approx(_reference_frechet(a, b), rel=1e-8)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_shift_adds_its_square():
    a = np.random.default_rng(1).standard_normal((500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + 2.0) == pytest.approx(4 * 4.0, rel=1e-8)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """A judge trained here, in an empty cache dir, so that the first-use path is what runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield get_judge("digits")


def test_digit_judge_recognises_real_test_digits(judge):
    x, y = load_images("digits", "test", size=16)
    report = judge.evaluate(x, y)
    assert report["accuracy"] > 0.9 and judge.test_accuracy == pytest.approx(report["accuracy"])
    assert report["classes_covered"] == 10
    assert report["frechet"] == pytest.approx(0.0, abs=1e-4)  # the test set against itself


def test_floor_is_the_scipy_frechet_distance_of_real_train_and_test_features(judge):
    train, _ = load_images("digits", "train", size=16)
    test, _ = load_images("digits", "test", size=16)
    expected = _reference_frechet(judge.features(train), judge.features(test))
    assert judge.floor == pytest.approx(expected, rel=1e-4)
    assert judge.evaluate(train)["frechet"] == pytest.approx(expected, rel=1e-4)


def test_judge_recipe_learns_digits_at_28_pixels_from_a_small_subset():
    x_train, y_train = load_images("digits", "train", size=28)
    x_test, y_test = load_images("digits", "test", size=28)
    network, accuracy = train_network(x_train, y_train, x_test, y_test, 10, epochs=12)
    assert accuracy > 0.9
    assert not network.training


def test_noise_is_far_from_the_floor_and_unconfident(judge):
    noise = np.random.default_rng(0).random((359, 1, 8, 8)).astype(np.float32)
    report = judge.evaluate(noise)
    assert report["frechet"] > 5 * report["frechet_floor"]
    assert report["confidence"] < 0.9


def test_judge_is_cached_and_reloaded_with_the_same_answers(judge):
    assert judge_path("digits").exists()
    reloaded = get_judge("digits")
    x, _ = load_images("digits", "test", size=16)
    np.testing.assert_allclose(reloaded.probs(x[:20]), judge.probs(x[:20]), atol=1e-6)


def test_one_pass_readings_match_the_whole_network(judge):
    import torch

    x, y = load_images("digits", "test", size=16)
    report, predicted = judge.evaluate(x[:50], y[:50], return_predicted=True)
    with torch.no_grad():
        logits = judge.network(judge._prepare(x[:50])).double().numpy()
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(judge.probs(x[:50]), expected, atol=1e-9)
    np.testing.assert_array_equal(predicted, logits.argmax(axis=1))
    assert report["accuracy"] == pytest.approx((predicted == y[:50]).mean())
    assert report == judge.evaluate(x[:50], y[:50])
