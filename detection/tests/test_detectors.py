from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from data import make_scenes
from model import (
    DETECTORS,
    DetectorConfig,
    build_detector,
    label_anchors,
    sample_labels,
    smooth_l1,
)


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
def test_under_bf16_autocast_losses_and_boxes_stay_float32_and_near_the_float32_ones(detector):
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(detector=detector, width=8)).eval()
    images, targets = batch(4)
    totals = {}
    for name, precision in [
        ("fp32", nullcontext()),
        ("bf16", torch.autocast("cpu", dtype=torch.bfloat16)),
    ]:
        generators = [torch.Generator().manual_seed(i) for i in range(len(images))]
        with precision:
            losses = model(images, targets, generators)[1]
            detections = model.detect(images, score_threshold=0.0)
        assert all(loss.dtype == torch.float32 for loss in losses.values()), losses
        assert all(b.dtype == s.dtype == torch.float32 for b, s, _ in detections)
        totals[name] = sum(losses.values()).item()
    assert totals["bf16"] != totals["fp32"]  # the networks did run in bfloat16
    assert totals["bf16"] == pytest.approx(totals["fp32"], rel=0.02)


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


def test_yolo_encodes_a_hand_worked_box_and_decodes_it_back():
    model = build_detector(DetectorConfig(detector="yolo", width=4))  # 64 px, an 8 x 8 grid
    box = torch.tensor([[8.0, 8.0, 24.0, 40.0]])  # centre (16, 24): cell column 2, row 3
    has_object, goal, cls, boxes_px = model.encode_targets(
        [{"boxes": box, "labels": torch.tensor([7])}]
    )
    assert torch.nonzero(has_object[0]).tolist() == [[3, 2]]
    # offsets (0, 0) in the cell; sqrt(16 / 64) = 0.5, sqrt(32 / 64) = 1 / sqrt(2)
    torch.testing.assert_close(goal[0, 3, 2], torch.tensor([0.0, 0.0, 0.5, 0.5**0.5]))
    assert cls[0, 3, 2] == 7 and torch.equal(boxes_px[0, 3, 2], box[0])
    torch.testing.assert_close(model.to_boxes(goal)[0, 3, 2], box[0])


def test_yolo_target_encoding_and_box_decoding_invert_each_other_on_random_boxes():
    model = build_detector(DetectorConfig(detector="yolo", width=4, image_size=96))
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(5, 2, generator=g, dtype=torch.float64) * 60
    boxes = torch.cat([corner, corner + 4 + torch.rand(5, 2, generator=g) * 30], 1)
    has_object, goal, _, truth = model.encode_targets(
        [{"boxes": b[None], "labels": torch.tensor([0])} for b in boxes]
    )
    decoded = model.to_boxes(goal.double())[has_object]
    torch.testing.assert_close(decoded, truth[has_object].double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(truth[has_object].double(), boxes, rtol=0, atol=1e-5)


def test_rpn_anchor_labelling_on_a_hand_worked_case():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 54.0, 70.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with box 0: positive
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5: between 0.3 and 0.6, ignored
            [0.0, 0.0, 10.0, 2.0],  # IoU 0.2: background
            [30.0, 30.0, 40.0, 40.0],  # touches nothing: background
            [50.0, 50.0, 60.0, 70.0],  # IoU 0.4 with box 1, but its best anchor: positive
            [50.0, 50.0, 70.0, 70.0],  # IoU 0.2 with box 1: background
        ]
    )
    labels, matched = label_anchors(anchors, boxes)
    assert labels.tolist() == [1, -1, 0, 0, 1, 0]
    assert matched[[0, 1, 4]].tolist() == [0, 0, 1]
    labels, _ = label_anchors(anchors, torch.zeros(0, 4))
    assert labels.tolist() == [0] * 6  # a scene without digits: every anchor is background
