import pytest
import torch
import torch.nn.functional as F
from data import make_scenes
from model import DETECTORS, DetectorConfig, build_detector, sample_labels, smooth_l1


def batch(n=8, seed=0):
    scenes = make_scenes(n, "train", seed=seed)
    images = torch.from_numpy(scenes.images)
    targets = [
        {"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lb)}
        for b, lb in zip(scenes.boxes, scenes.labels)
    ]
    return images, targets


@pytest.mark.parametrize("detector", DETECTORS)
def test_each_detector_loss_decreases_on_a_fixed_batch(detector):
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(detector=detector, width=8))
    images, targets = batch(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        torch.manual_seed(1)  # the same sampled anchors, regions and windows every step
        loss = sum(model(images, targets)[1].values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("detector", DETECTORS)
def test_detect_returns_boxes_scores_and_labels_per_image(detector):
    model = build_detector(DetectorConfig(detector=detector, width=4)).eval()
    images, _ = batch(3)
    results = model.detect(images, score_threshold=0.0)
    assert len(results) == 3
    for boxes, scores, labels in results:
        assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape
        assert len(scores) <= 20 and torch.all(scores[:-1] >= scores[1:])
        assert torch.all((labels >= 0) & (labels < 10))


def test_two_stage_works_with_roi_pooling_too():
    model = build_detector(DetectorConfig(detector="two-stage", width=4, roi_op="pool"))
    images, targets = batch(1)
    losses = model(images, targets)[1]
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_blank_images_give_finite_losses_and_no_crash():
    model = build_detector(DetectorConfig(detector="two-stage", width=4))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model(torch.zeros(2, 1, 64, 64), [empty, empty])[1]
    assert all(torch.isfinite(v) for v in losses.values())


def test_sampling_keeps_the_positive_fraction():
    labels = torch.tensor([1] * 50 + [0] * 200 + [-1] * 10)
    chosen = sample_labels(labels, 64, 0.25)
    assert len(chosen) == 64 and (labels[chosen] == 1).sum() == 16
    assert torch.all(labels[chosen] >= 0)


@pytest.mark.parametrize("beta", [1.0, 1 / 9, 0.5])
def test_smooth_l1_matches_torch(beta):
    torch.manual_seed(0)
    x = torch.randn(200, 4, dtype=torch.float64)
    x[0] = torch.tensor([beta, -beta, 0.0, beta / 2], dtype=torch.float64)  # at the seams
    expected = F.smooth_l1_loss(x, torch.zeros_like(x), reduction="sum", beta=beta)
    torch.testing.assert_close(smooth_l1(x, beta), expected, rtol=1e-12, atol=1e-12)
