import pytest
import torch
import torchvision.ops as tv
from boxes import (
    batched_nms,
    box_iou,
    decode_boxes,
    encode_boxes,
    make_anchors,
    nms,
    roi_align,
    roi_pool,
)


def random_boxes(n, size=64.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size * 0.8
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size * 0.4 + 1
    return torch.cat([xy, xy + wh], dim=1)


def random_rois(n, n_images, size, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, size, seed)
    boxes[: n // 4, 2:] = boxes[: n // 4, :2] + 0.3  # tiny RoIs
    boxes[n // 4 : n // 2] -= size * 0.3  # RoIs hanging over the top-left edge
    index = torch.randint(0, n_images, (n, 1), generator=g).double()
    return torch.cat([index, boxes], dim=1)


def test_box_iou_matches_torchvision():
    a, b = random_boxes(30, seed=1), random_boxes(20, seed=2)
    torch.testing.assert_close(box_iou(a, b), tv.box_iou(a, b), rtol=0, atol=1e-12)


def test_iou_of_hand_worked_boxes():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [2.0, 2, 4, 4], [0.0, 0, 2, 2]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(threshold):
    boxes = random_boxes(200, seed=3)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))


def test_batched_nms_matches_torchvision():
    boxes = random_boxes(300, seed=5)
    g = torch.Generator().manual_seed(6)
    scores = torch.rand(300, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (300,), generator=g)
    ours = batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(ours, tv.batched_nms(boxes, scores, labels, 0.5))


def test_encoding_and_decoding_invert_each_other():
    anchors, boxes = random_boxes(50, seed=7), random_boxes(50, seed=8)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        deltas = encode_boxes(boxes, anchors, weights)
        torch.testing.assert_close(decode_boxes(deltas, anchors, weights), boxes)


def test_anchors_cover_the_image_as_specified():
    sizes, ratios = (12.0, 24.0), (1.0, 2.0)
    anchors = make_anchors((4, 5), stride=8, sizes=sizes, ratios=ratios)
    assert anchors.shape == (4 * 5 * 4, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.equal(torch.unique(centres[:, 0]), torch.arange(5) * 8 + 4.0)
    assert torch.equal(torch.unique(centres[:, 1]), torch.arange(4) * 8 + 4.0)
    wh = anchors[:4, 2:] - anchors[:4, :2]  # the first cell's four shapes
    torch.testing.assert_close(wh[:, 0] * wh[:, 1], torch.tensor([144.0, 144, 576, 576]))
    torch.testing.assert_close(wh[:, 1] / wh[:, 0], torch.tensor([1.0, 2, 1, 2]))


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_roi_pool_matches_torchvision_forward_and_gradient(scale):
    features = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    rois = random_rois(24, 2, size=16 / scale, seed=9)
    ours = roi_pool(features, rois, 7, scale)
    theirs = tv.roi_pool(features, rois, 7, scale)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    upstream = torch.randn_like(ours)
    (grad_ours,) = torch.autograd.grad(ours, features, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, features, upstream)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampling_ratio", [1, 2, -1])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_matches_torchvision_forward_and_gradient(sampling_ratio, aligned):
    features = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    rois = random_rois(24, 2, size=64, seed=10)
    kwargs = dict(spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned)
    ours = roi_align(features, rois, 7, **kwargs)
    theirs = tv.roi_align(features, rois, 7, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    upstream = torch.randn_like(ours)
    (grad_ours,) = torch.autograd.grad(ours, features, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, features, upstream)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=0, atol=1e-10)


def _tied_boxes(seed):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(500, 2, generator=g, dtype=torch.float64) * 50
    boxes = torch.cat([corner, corner + 5 + 30 * torch.rand(500, 2, generator=g).double()], 1)
    scores = (torch.rand(500, generator=g) > 0.5).double()  # two score levels: many ties
    labels = torch.randint(0, 3, (500,), generator=g)
    return boxes, scores, labels


@pytest.mark.parametrize("seed", range(3))
def test_nms_with_tied_scores_keeps_torchvisions_boxes_in_its_order(seed):
    boxes, scores, labels = _tied_boxes(seed)
    assert torch.equal(nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5))
    assert torch.equal(
        batched_nms(boxes, scores, labels, 0.5), tv.batched_nms(boxes, scores, labels, 0.5)
    )


@pytest.mark.parametrize("sampling_ratio", [0, -1, 2])
def test_roi_align_on_zero_size_and_inverted_rois_matches_torchvision(sampling_ratio):
    features = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(0)).double()
    rois = torch.tensor(
        [[0, 2, 2, 2, 2], [1, 5, 5, 3, 3], [0, 1, 1, 6, 7], [1, 2.5, 2.5, 2.7, 2.9]],
        dtype=torch.float64,
    )
    for aligned in (True, False):
        ours = roi_align(features, rois, 3, 1.0, sampling_ratio, aligned)
        theirs = tv.roi_align(features, rois, 3, 1.0, sampling_ratio, aligned)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    none = torch.zeros(0, 5, dtype=torch.float64)
    assert roi_align(features, none, 3, 1.0, sampling_ratio, True).shape == (0, 3, 3, 3)
