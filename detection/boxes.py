"""Box operations by hand: IoU, NMS, anchors, box deltas, RoI pooling and RoI align.

Boxes are (x1, y1, x2, y2) in pixels, x to the right and y down, as in torchvision. Each
function here is tested equal to its torchvision.ops counterpart (tests/test_boxes.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# exp() of a predicted log-scale is clamped here, as in Faster R-CNN: no box grows past 1000/16.
MAX_LOG_SCALE = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:  # (N, 4) -> (N,)
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU = |A n B| / |A u B|; (N, 4), (M, 4) -> (N, M)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first.

    1. Take the best remaining box and keep it.
    2. Drop every remaining box whose IoU with it is above the threshold.
    3. Repeat until no box remains.
    """
    # Stable: among equal scores the lower index comes first, as in torchvision's kernel.
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])  # (N, N), rows and columns in score order
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each class separately; indices of the kept boxes, highest score first."""
    keep = [
        torch.nonzero(labels == label).flatten()[
            nms(boxes[labels == label], scores[labels == label], iou_threshold)
        ]
        for label in torch.unique(labels)
    ]
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    keep = torch.cat(keep).sort().values  # ties then come out in index order, as torchvision's
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


def make_anchors(
    feature_size: tuple[int, int], stride: int, sizes: tuple[float, ...], ratios: tuple[float, ...]
) -> torch.Tensor:
    """Anchors centred on every feature-map cell: (Hf * Wf * A, 4), A = len(sizes) * len(ratios).

    An anchor of size s and ratio r = h / w has area s^2: w = s / sqrt(r), h = s * sqrt(r).
    Cell (i, j) covers pixels [j*stride, (j+1)*stride); its anchors are centred in it.
    Order: row-major over cells, then sizes, then ratios (matching the RPN's output layout).
    """
    hf, wf = feature_size
    shapes = torch.tensor(
        [[s / math.sqrt(r), s * math.sqrt(r)] for s in sizes for r in ratios]
    )  # (A, 2) as (w, h)
    ys, xs = torch.meshgrid(
        (torch.arange(hf) + 0.5) * stride, (torch.arange(wf) + 0.5) * stride, indexing="ij"
    )
    centres = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2)  # (Hf*Wf, 1, 2)
    half = shapes[None] / 2  # (1, A, 2)
    return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)


def encode_boxes(
    boxes: torch.Tensor, anchors: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Targets (tx, ty, tw, th) that move each anchor onto its box (Faster R-CNN, eq. 2):

    tx = (x - xa) / wa,  ty = (y - ya) / ha,  tw = log(w / wa),  th = log(h / ha)
    """
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x, y = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    wx, wy, ww, wh = weights
    return torch.stack(
        [wx * (x - xa) / wa, wy * (y - ya) / ha, ww * torch.log(w / wa), wh * torch.log(h / ha)],
        dim=1,
    )


def decode_boxes(
    deltas: torch.Tensor, anchors: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """The inverse of encode_boxes: apply (tx, ty, tw, th) to anchors, giving (x1, y1, x2, y2)."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    wx, wy, ww, wh = weights
    x = deltas[:, 0] / wx * wa + xa
    y = deltas[:, 1] / wy * ha + ya
    w = torch.exp((deltas[:, 2] / ww).clamp(max=MAX_LOG_SCALE)) * wa
    h = torch.exp((deltas[:, 3] / wh).clamp(max=MAX_LOG_SCALE)) * ha
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's round(): 2.5 -> 3, -2.5 -> -3 (torch.round rounds half to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_pool(
    features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float
) -> torch.Tensor:
    """RoI max pooling (Fast R-CNN): each RoI is cut into output_size^2 bins, max over each.

    features (N, C, H, W); rois (R, 5) as (image index, x1, y1, x2, y2) in input pixels.
    Returns (R, C, output_size, output_size). RoI corners are rounded to feature cells, and
    bin p covers cells [floor(p * bin), ceil((p + 1) * bin)), as in the original Caffe code.
    """
    _, channels, height, width = features.shape
    n_rois = len(rois)
    start = _round_half_away(rois[:, 1:3] * spatial_scale)  # (R, 2) as (x, y)
    end = _round_half_away(rois[:, 3:5] * spatial_scale)
    size = (end - start + 1).clamp(min=1)  # malformed RoIs become 1x1
    bin_size = size / output_size  # (R, 2)
    p = torch.arange(output_size, dtype=rois.dtype, device=rois.device)
    lo = torch.floor(p[None, :, None] * bin_size[:, None]) + start[:, None]  # (R, P, 2)
    hi = torch.ceil((p[None, :, None] + 1) * bin_size[:, None]) + start[:, None]
    lo_x, hi_x = lo[..., 0].clamp(0, width), hi[..., 0].clamp(0, width)  # (R, P)
    lo_y, hi_y = lo[..., 1].clamp(0, height), hi[..., 1].clamp(0, height)
    device = features.device
    cols, rows = torch.arange(width, device=device), torch.arange(height, device=device)
    in_x = (cols[None, None] >= lo_x[..., None]) & (cols[None, None] < hi_x[..., None])  # (R,P,W)
    in_y = (rows[None, None] >= lo_y[..., None]) & (rows[None, None] < hi_y[..., None])  # (R,P,H)
    per_roi = features[rois[:, 0].long()]  # (R, C, H, W)
    out = features.new_zeros(n_rois, channels, output_size, output_size)
    for py in range(output_size):
        for px in range(output_size):
            mask = in_y[:, py, :, None] & in_x[:, px, None, :]  # (R, H, W)
            masked = per_roi.masked_fill(~mask[:, None], float("-inf"))
            best = masked.amax(dim=(2, 3))  # (R, C)
            out[:, :, py, px] = torch.where(mask.any(dim=(1, 2))[:, None], best, 0.0)
    return out


def _sample_weights(coords: torch.Tensor, length: int) -> torch.Tensor:
    """Bilinear weights of sample points on one axis: (R, S) coordinates -> (R, S, length).

    A point beyond -1 or length contributes nothing; within, it is clamped to [0, length - 1]
    and shared between its two neighbouring cells (Mask R-CNN's RoI align, as in torchvision).
    """
    outside = (coords < -1.0) | (coords > length)
    coords = coords.clamp(min=0)
    low = torch.floor(coords).clamp(max=length - 1)
    coords = torch.where(low >= length - 1, low, coords)
    frac = coords - low
    high = (low + 1).clamp(max=length - 1)
    cells = torch.arange(length, dtype=coords.dtype, device=coords.device)
    weights = (1 - frac)[..., None] * (cells == low[..., None]) + frac[..., None] * (
        cells == high[..., None]
    )
    return weights.masked_fill(outside[..., None], 0.0)


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 2,
    aligned: bool = False,
) -> torch.Tensor:
    """RoI align (Mask R-CNN): average of bilinear samples in each bin, no rounding anywhere.

    With sampling_ratio = s > 0 each bin averages an s x s grid of samples; with s <= 0 the grid
    adapts to the RoI, ceil(roi_size / output_size) per axis (as torchvision does).
    Bilinear sampling is separable, so the samples of all RoIs are two matrix products:
    out = W_y F W_x^T, where W_y (R, S, H) and W_x (R, S, W) hold the interpolation weights.
    """
    offset = 0.5 if aligned else 0.0
    start = rois[:, 1:3] * spatial_scale - offset  # (R, 2) as (x, y)
    size = rois[:, 3:5] * spatial_scale - offset - start
    if not aligned:
        size = size.clamp(min=1.0)
    empty = features.new_zeros(len(rois), features.shape[1], output_size, output_size)
    if len(rois) == 0:
        return empty
    if sampling_ratio <= 0:  # the grid differs per RoI: one RoI at a time
        # ceil(size / output) samples per bin and axis; an aligned RoI of zero or negative size
        # has none, and its bins average nothing: zeros, as in torchvision.
        grids = torch.ceil(size / output_size).clamp(min=0).long()
        for i in range(len(rois)):
            if grids[i].min() > 0:
                empty[i] = _roi_align_grid(
                    features,
                    rois[i : i + 1],
                    start[i : i + 1],
                    size[i : i + 1],
                    output_size,
                    (int(grids[i, 1]), int(grids[i, 0])),
                )[0]
        return empty
    return _roi_align_grid(
        features, rois, start, size, output_size, (sampling_ratio, sampling_ratio)
    )


def _roi_align_grid(features, rois, start, size, output_size, grid):
    grid_y, grid_x = grid
    _, _, height, width = features.shape
    bin_size = size / output_size  # (R, 2)

    def sample_coords(axis: int, n_samples: int) -> torch.Tensor:  # (R, P * n_samples)
        p = torch.arange(output_size, dtype=features.dtype, device=features.device)[:, None]
        i = torch.arange(n_samples, dtype=features.dtype, device=features.device)[None, :]
        offsets = (
            p * bin_size[:, axis, None, None]
            + (i + 0.5) * bin_size[:, axis, None, None] / n_samples
        )
        return (start[:, axis, None, None] + offsets).reshape(len(rois), -1)

    weights_y = _sample_weights(sample_coords(1, grid_y), height)  # (R, P*gy, H)
    weights_x = _sample_weights(sample_coords(0, grid_x), width)  # (R, P*gx, W)
    per_roi = features[rois[:, 0].long()]  # (R, C, H, W)
    samples = weights_y[:, None] @ per_roi @ weights_x[:, None].transpose(-1, -2)  # (R,C,Pgy,Pgx)
    return F.avg_pool2d(samples, kernel_size=(grid_y, grid_x))
