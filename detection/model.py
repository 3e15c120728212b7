"""Three object detectors, from the oldest idea to the two that won.

1. SlidingWindowDetector: a CNN classifier (10 digits + background) applied to every window
   of several sizes, then NMS. Simple, slow, and its boxes are only as good as its windows.
2. TwoStageDetector (Faster R-CNN, Ren et al. 2015): a backbone CNN; a region proposal network
   that scores and refines anchors; RoI align (or RoI pooling) of each proposal's features; a
   head that classifies each region and refines its box.
3. YoloDetector (YOLO v1, Redmon et al. 2016): one network, one pass; each grid cell predicts a
   box, its objectness and the class of the object whose centre falls in it.

Every detector: forward(images, targets, generators, mean_count) -> (None, losses) for
training, and detect(images, score_threshold) -> per image (boxes (K, 4), scores (K,), labels
(K,)). generators: one torch.Generator per image, the source of every random draw made for it
(sampled anchors, regions, windows), so that an image gets the same draws whichever process of a
torchrun job trains on it; mean_count: see own_count. Under autocast (--precision bf16 or fp16)
the convolutions and linear layers run in half precision; their outputs are cast to float32
before any box arithmetic, RoI sampling, NMS or loss.
Labels are 0..C-1; the two classifiers that need a background class put it last, at index C.
Shapes: N images, C classes, H x W image, Hf x Wf feature map, A anchors per cell, R regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from boxes import (
    batched_nms,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    make_anchors,
    nms,
    roi_align,
    roi_pool,
)

DETECTORS = ("sliding", "two-stage", "yolo")


@dataclass
class DetectorConfig:
    detector: str = "yolo"
    n_classes: int = 10
    image_size: int = 64
    width: int = 16  # channels of the first backbone stage; each later stage doubles them
    # sliding window
    window_input: int = 16  # every window is resized to this side before classification
    window_sizes: tuple[float, ...] = (14.0, 18.0, 22.0, 26.0)  # window heights in pixels
    window_ratios: tuple[float, ...] = (1.0, 1.6)  # height / width
    window_stride: int = 3
    # two-stage
    anchor_sizes: tuple[float, ...] = (12.0, 17.0, 24.0)  # sqrt(area) in pixels
    anchor_ratios: tuple[float, ...] = (1.0, 1.6, 2.6)  # height / width
    roi_op: str = "align"  # align (Mask R-CNN) or pool (Fast R-CNN)
    roi_size: int = 7
    proposals_train: int = 48
    proposals_test: int = 24
    # yolo
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5


class ConvBlock(nn.Sequential):
    """conv 3x3 - batch norm - ReLU, twice, then 2x2 max pooling: halves the resolution."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )


class Backbone(nn.Sequential):
    """n_stages ConvBlocks: (N, 1, H, W) -> (N, width * 2^(n-1), H / 2^n, W / 2^n)."""

    def __init__(self, width: int, n_stages: int):
        channels = [1] + [width * 2**i for i in range(n_stages)]
        super().__init__(*[ConvBlock(a, b) for a, b in zip(channels, channels[1:])])
        self.out_channels = channels[-1]
        self.stride = 2**n_stages


def own_count(count: int) -> float:
    """What a loss summed over `count` samples (anchors, regions, windows) is divided by, in one
    process: the count itself, giving the mean over the batch.

    Under torchrun train.py passes instead the mean of the count over the N processes, C / N
    with C the count of the whole global batch. DDP averages the processes' gradients, so the
    losses S_r / (C / N) of the processes r give (1/N) sum_r grad S_r / (C / N) =
    grad (sum_r S_r) / C: the gradient of one process holding the whole batch. Dividing by each
    process's own count c_r instead would give the samples of a process with fewer of them
    (fewer digits, so fewer positives) more weight than those of the others.
    """
    return count


def float32(device: torch.device):
    """Autocast off: RoI align's matrix products would otherwise run in half precision."""
    return torch.autocast(device.type, enabled=False)


def smooth_l1(x: torch.Tensor, beta: float) -> torch.Tensor:
    """0.5 x^2 / beta for |x| < beta, |x| - 0.5 beta beyond (Fast R-CNN, eq. 3), summed."""
    ax = x.abs()
    return torch.where(ax < beta, 0.5 * ax**2 / beta, ax - 0.5 * beta).sum()


# ----------------------------------------------------------------------------- 1. sliding window


class WindowClassifier(nn.Module):
    """A small CNN that names a window: one of C digits, or background (index C)."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.features = Backbone(cfg.width, 2)
        side = cfg.window_input // self.features.stride
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.features.out_channels * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, cfg.n_classes + 1),
        )

    def forward(self, crops: torch.Tensor) -> torch.Tensor:  # (R, 1, s, s) -> (R, C + 1)
        return self.head(self.features(crops))


class SlidingWindowDetector(nn.Module):
    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.classifier = WindowClassifier(cfg)
        self.register_buffer("windows", self._make_windows(cfg), persistent=False)

    @staticmethod
    def _make_windows(cfg: DetectorConfig) -> torch.Tensor:
        """Every window of every size and ratio, at every stride step inside the image."""
        windows = []
        for height in cfg.window_sizes:
            for ratio in cfg.window_ratios:
                width = height / ratio
                xs = torch.arange(0, cfg.image_size - width + 1, cfg.window_stride)
                ys = torch.arange(0, cfg.image_size - height + 1, cfg.window_stride)
                y, x = torch.meshgrid(ys.float(), xs.float(), indexing="ij")
                windows.append(torch.stack([x, y, x + width, y + height], -1).reshape(-1, 4))
        return torch.cat(windows)  # (Wn, 4)

    def crop(self, images: torch.Tensor, boxes_per_image: list[torch.Tensor]) -> torch.Tensor:
        """Each box resized to window_input x window_input by RoI align: (R, 1, s, s)."""
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes_per_image)]
        )
        with float32(images.device):
            return roi_align(images.float(), rois, self.cfg.window_input, spatial_scale=1.0)

    def training_crops(self, images, targets, generators, negatives_per_image: int = 8):
        """Digit windows (jittered true boxes) and background windows (IoU < 0.3 with all)."""
        boxes, labels = [], []
        for target, generator in zip(targets, generators):
            shape, device = target["boxes"].shape, images.device
            jitter = (torch.rand(shape, generator=generator).to(device) - 0.5) * 3.0
            positives = target["boxes"] + jitter
            overlap = box_iou(self.windows, target["boxes"]).amax(1) if len(positives) else None
            background = self.windows if overlap is None else self.windows[overlap < 0.3]
            pick = torch.randint(len(background), (negatives_per_image,), generator=generator)
            pick = pick.to(device)
            boxes.append(torch.cat([positives, background[pick]]))
            labels.append(
                torch.cat(
                    [
                        target["labels"],
                        target["labels"].new_full((negatives_per_image,), self.cfg.n_classes),
                    ]
                )
            )
        return self.crop(images, boxes), torch.cat(labels)

    def forward(self, images, targets, generators=None, mean_count=own_count):
        crops, labels = self.training_crops(images, targets, generators or [None] * len(images))
        logits = self.classifier(crops).float()  # (R, C + 1)
        total = F.cross_entropy(logits, labels, reduction="sum")
        return None, {"classification": total / mean_count(len(labels))}

    @torch.no_grad()
    def detect(self, images, score_threshold: float = 0.5, iou_threshold: float = 0.3):
        results = []
        for image in images:
            crops = self.crop(image[None], [self.windows])
            probs = torch.cat([self.classifier(c).float().softmax(1) for c in crops.split(2048)])
            scores, labels = probs[:, : self.cfg.n_classes].max(1)  # best digit per window
            keep = scores > score_threshold
            boxes, scores, labels = self.windows[keep], scores[keep], labels[keep]
            # One digit, one box: windows of different classes on the same digit compete too.
            keep = nms(boxes, scores, iou_threshold)[:20]
            results.append((boxes[keep], scores[keep], labels[keep]))
        return results


# ----------------------------------------------------------------------------- 2. two-stage


class RegionProposalNetwork(nn.Module):
    """Slides a 3x3 conv over the features; for each of A anchors per cell predicts an
    objectness logit and deltas (tx, ty, tw, th) that move the anchor onto an object."""

    def __init__(self, channels: int, n_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, n_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * n_anchors, 1)

    def forward(self, features):  # (N, Ch, Hf, Wf)
        h = F.relu(self.conv(features))
        n = len(features)
        logits = self.objectness(h).permute(0, 2, 3, 1).reshape(n, -1)  # (N, Hf*Wf*A)
        deltas = self.deltas(h).permute(0, 2, 3, 1).reshape(n, -1, 4)  # (N, Hf*Wf*A, 4)
        return logits.float(), deltas.float()  # float32: decoded into boxes, and into the loss


def sample_labels(
    labels: torch.Tensor, n: int, positive_fraction: float, generator=None
) -> torch.Tensor:
    """Indices of at most n labelled items, at most positive_fraction of them positive (>= 1)
    and the rest negative (0); items labelled -1 are ignored. The draws come from `generator`
    (a CPU one; None: torch's global generator), on any device."""
    positives = torch.nonzero(labels >= 1).flatten()
    negatives = torch.nonzero(labels == 0).flatten()
    n_pos = min(len(positives), int(n * positive_fraction))
    n_neg = min(len(negatives), n - n_pos)
    pick_pos = torch.randperm(len(positives), generator=generator)[:n_pos]
    pick_neg = torch.randperm(len(negatives), generator=generator)[:n_neg]
    return torch.cat([positives[pick_pos.to(labels.device)], negatives[pick_neg.to(labels.device)]])


def label_anchors(anchors, boxes, high: float = 0.6, low: float = 0.3):
    """The RPN's training labels (A,): 1 object, 0 background, -1 ignored; and the index of
    each anchor's best box (A,).

    An anchor is positive if its IoU with some box is >= high, or if it is the best anchor of a
    box (so every box gets one, however oddly shaped); negative if its best IoU is < low; the
    ones in between teach nothing clear and are ignored (Faster R-CNN, section 3.1.2).
    """
    labels = torch.zeros(len(anchors), device=anchors.device)
    matched = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
    if len(boxes):
        iou = box_iou(anchors, boxes)  # (A, K)
        best_iou, matched = iou.max(1)
        labels[(best_iou >= low) & (best_iou < high)] = -1
        labels[best_iou >= high] = 1
        labels[iou.argmax(0)] = 1
    return labels, matched


class TwoStageDetector(nn.Module):
    BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # the head's deltas are scaled up, as in Faster R-CNN

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.width, 2)
        channels, stride = self.backbone.out_channels, self.backbone.stride
        n_anchors = len(cfg.anchor_sizes) * len(cfg.anchor_ratios)
        side = cfg.image_size // stride
        anchors = make_anchors((side, side), stride, cfg.anchor_sizes, cfg.anchor_ratios)
        self.register_buffer("anchors", anchors, persistent=False)  # (Hf*Wf*A, 4)
        self.rpn = RegionProposalNetwork(channels, n_anchors)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * cfg.roi_size**2, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, 256),
            nn.ReLU(inplace=True),
        )
        self.class_logits = nn.Linear(256, cfg.n_classes + 1)  # + background, at index C
        self.box_deltas = nn.Linear(256, 4 * cfg.n_classes)  # one refinement per class

    def pool(self, features, proposals: list[torch.Tensor]) -> torch.Tensor:
        """(R, Ch, roi_size, roi_size) features of every proposal, by RoI align or pooling, in
        float32."""
        rois = torch.cat(
            [torch.cat([torch.full_like(p[:, :1], i), p], 1) for i, p in enumerate(proposals)]
        )
        op = roi_align if self.cfg.roi_op == "align" else roi_pool
        with float32(features.device):
            return op(features.float(), rois, self.cfg.roi_size, 1.0 / self.backbone.stride)

    def classify(self, features, regions: list[torch.Tensor]):
        """The head on every region: class logits (R, C + 1) and one box refinement per class
        (R, C, 4), both float32."""
        hidden = self.head(self.pool(features, regions))
        class_logits = self.class_logits(hidden).float()
        return class_logits, self.box_deltas(hidden).float().reshape(len(hidden), -1, 4)

    def propose(self, logits, deltas, n_keep: int) -> list[torch.Tensor]:
        """Decode every anchor, keep the best 200 by objectness, NMS at 0.7, keep n_keep."""
        proposals = []
        size = self.cfg.image_size
        for image_logits, image_deltas in zip(logits.detach(), deltas.detach()):
            boxes = clip_boxes(decode_boxes(image_deltas, self.anchors), size, size)
            wide_enough = ((boxes[:, 2] - boxes[:, 0]) > 2) & ((boxes[:, 3] - boxes[:, 1]) > 2)
            boxes, scores = boxes[wide_enough], image_logits[wide_enough]
            top = scores.topk(min(200, len(scores))).indices
            keep = nms(boxes[top], scores[top], 0.7)[:n_keep]
            proposals.append(boxes[top][keep])
        return proposals

    def rpn_loss(self, logits, deltas, targets, generators, mean_count):
        """Anchors with IoU >= 0.6 to a box (or the best anchor of each box) are positive,
        IoU < 0.3 negative; 64 sampled per image, half positive at most. BCE + smooth L1, both
        summed over the sampled anchors and divided by their count (see own_count)."""
        cls_losses, box_losses, count = logits.new_zeros(()), logits.new_zeros(()), 0
        for image_logits, image_deltas, target, generator in zip(
            logits, deltas, targets, generators
        ):
            labels, matched = label_anchors(self.anchors, target["boxes"])
            chosen = sample_labels(labels, 64, 0.5, generator)
            cls_losses = cls_losses + F.binary_cross_entropy_with_logits(
                image_logits[chosen], labels[chosen], reduction="sum"
            )
            # Every image adds a term, with no positives an empty one: the deltas' weights get a
            # (zero) gradient on every process, as DDP needs.
            positive = chosen[labels[chosen] == 1]
            goal = encode_boxes(target["boxes"][matched[positive]], self.anchors[positive])
            box_losses = box_losses + smooth_l1(image_deltas[positive] - goal, beta=1 / 9)
            count += len(chosen)
        n = mean_count(count)
        return cls_losses / n, box_losses / n

    def head_targets(self, proposals, targets, generators):
        """Add the true boxes to the proposals; label each by its best box (IoU >= 0.5), else
        background; sample 64 per image, a quarter foreground at most."""
        kept, labels, goals = [], [], []
        for boxes, target, generator in zip(proposals, targets, generators):
            boxes = torch.cat([boxes, target["boxes"]])
            image_labels = torch.full((len(boxes),), self.cfg.n_classes, device=boxes.device)
            image_goals = torch.zeros(len(boxes), 4, device=boxes.device)
            if len(target["boxes"]):
                best_iou, matched = box_iou(boxes, target["boxes"]).max(1)
                foreground = best_iou >= 0.5
                image_labels[foreground] = target["labels"][matched[foreground]]
                image_goals = encode_boxes(target["boxes"][matched], boxes, self.BOX_WEIGHTS)
            # sample_labels counts labels >= 1 as positive: pass foreground as 1, background 0.
            chosen = sample_labels((image_labels < self.cfg.n_classes).long(), 64, 0.25, generator)
            kept.append(boxes[chosen])
            labels.append(image_labels[chosen])
            goals.append(image_goals[chosen])
        return kept, torch.cat(labels), torch.cat(goals)

    def forward(self, images, targets, generators=None, mean_count=own_count):
        generators = generators or [None] * len(images)
        features = self.backbone(images)  # (N, Ch, Hf, Wf)
        logits, deltas = self.rpn(features)
        rpn_cls, rpn_box = self.rpn_loss(logits, deltas, targets, generators, mean_count)
        proposals = self.propose(logits, deltas, self.cfg.proposals_train)
        rois, labels, goals = self.head_targets(proposals, targets, generators)
        class_logits, box_deltas = self.classify(features, rois)  # (R, C + 1), (R, C, 4)
        foreground = torch.nonzero(labels < self.cfg.n_classes).flatten()
        chosen = box_deltas[foreground, labels[foreground]]  # the refinement for its class
        # Both head losses are means over the sampled regions (see own_count); the count is 0
        # only where no process has a region, and then both sums are 0 too.
        n = mean_count(len(labels)) or 1
        losses = {
            "rpn_objectness": rpn_cls,
            "rpn_box": rpn_box,
            "head_class": F.cross_entropy(class_logits, labels, reduction="sum") / n,
            "head_box": smooth_l1(chosen - goals[foreground], beta=1.0) / n,
        }
        return None, losses

    @torch.no_grad()
    def detect(self, images, score_threshold: float = 0.05, iou_threshold: float = 0.5):
        features = self.backbone(images)
        logits, deltas = self.rpn(features)
        proposals = self.propose(logits, deltas, self.cfg.proposals_test)
        class_logits, box_deltas = self.classify(features, proposals)  # (R, C + 1), (R, C, 4)
        probs = class_logits.softmax(1)[:, : self.cfg.n_classes]  # (R, C)
        results, start = [], 0
        size = self.cfg.image_size
        for boxes in proposals:
            end = start + len(boxes)
            n_classes = self.cfg.n_classes
            refined = decode_boxes(
                box_deltas[start:end].reshape(-1, 4),
                boxes.repeat_interleave(n_classes, 0),
                self.BOX_WEIGHTS,
            )  # (R_i * C, 4): every proposal refined as every class
            refined = clip_boxes(refined, size, size)
            scores = probs[start:end].reshape(-1)
            labels = torch.arange(n_classes, device=boxes.device).repeat(len(boxes))
            keep = scores > score_threshold
            refined, scores, labels = refined[keep], scores[keep], labels[keep]
            keep = batched_nms(refined, scores, labels, iou_threshold)[:20]
            results.append((refined[keep], scores[keep], labels[keep]))
            start = end
        return results


# ----------------------------------------------------------------------------- 3. YOLO


class YoloDetector(nn.Module):
    """An S x S grid (S = image_size / 8). Cell (i, j) predicts, for the object whose centre
    falls in it: centre offsets (x, y) in [0, 1] within the cell, sqrt(w), sqrt(h) as fractions
    of the image, a confidence C, and class probabilities p(c)."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.width, 3)
        channels = self.backbone.out_channels
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 5 + cfg.n_classes, 1),
        )
        self.grid = cfg.image_size // self.backbone.stride

    def predict(self, images):
        """(N, S, S, 5 + C): sigmoid x, y, sqrt w, sqrt h, confidence; class logits (float32)."""
        out = self.head(self.backbone(images)).float().permute(0, 2, 3, 1)
        return torch.cat([out[..., :5].sigmoid(), out[..., 5:]], dim=-1)

    def to_boxes(self, pred: torch.Tensor) -> torch.Tensor:
        """(..., S, S, >=4) cell-relative predictions -> (..., S, S, 4) boxes in pixels."""
        s, size = self.grid, self.cfg.image_size
        cells = torch.arange(s, device=pred.device)
        rows, cols = torch.meshgrid(cells, cells, indexing="ij")
        cx = (cols + pred[..., 0]) * size / s
        cy = (rows + pred[..., 1]) * size / s
        w, h = pred[..., 2] ** 2 * size, pred[..., 3] ** 2 * size
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)

    def encode_targets(self, targets, device=None):
        """Per cell: responsible (object centre inside), x, y, sqrt w, sqrt h, class."""
        n, s, size = len(targets), self.grid, self.cfg.image_size
        has_object = torch.zeros(n, s, s, dtype=torch.bool, device=device)
        goal = torch.zeros(n, s, s, 4, device=device)
        cls = torch.zeros(n, s, s, dtype=torch.long, device=device)
        boxes_px = torch.zeros(n, s, s, 4, device=device)
        for i, target in enumerate(targets):
            for box, label in zip(target["boxes"], target["labels"]):
                cx, cy = (box[0] + box[2]) / 2 * s / size, (box[1] + box[3]) / 2 * s / size
                col, row = min(int(cx), s - 1), min(int(cy), s - 1)
                has_object[i, row, col] = True
                goal[i, row, col] = torch.stack(
                    [
                        cx - col,
                        cy - row,
                        ((box[2] - box[0]) / size).sqrt(),
                        ((box[3] - box[1]) / size).sqrt(),
                    ]
                )
                cls[i, row, col] = label
                boxes_px[i, row, col] = box
        return has_object, goal, cls, boxes_px

    def forward(self, images, targets, generators=None, mean_count=own_count):
        """The YOLO v1 loss (eq. 3), one box per cell, summed and divided by the batch size:

        lambda_coord sum_obj [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - ...)^2]
        + sum_obj (C - C^)^2 + lambda_noobj sum_noobj (C - C^)^2 + sum_obj sum_c (p(c) - p^(c))^2
        where the confidence target C is the IoU of the predicted box with the true one.

        Nothing is drawn at random (generators go unused), and the count divided by is the
        number of images, the same on every process of a torchrun job (mean_count unused).
        """
        pred = self.predict(images)
        has_object, goal, cls, boxes_px = self.encode_targets(targets, images.device)
        n = len(images)
        obj, noobj = pred[has_object], pred[~has_object]
        iou = box_iou(self.to_boxes(pred)[has_object].detach(), boxes_px[has_object]).diagonal()
        class_probs = obj[:, 5:].softmax(-1)
        losses = {
            "coordinates": self.cfg.lambda_coord * ((obj[:, :4] - goal[has_object]) ** 2).sum() / n,
            "objectness": ((obj[:, 4] - iou) ** 2).sum() / n,
            "no_object": self.cfg.lambda_noobj * (noobj[:, 4] ** 2).sum() / n,
            "classes": ((class_probs - F.one_hot(cls[has_object], self.cfg.n_classes)) ** 2).sum()
            / n,
        }
        return None, losses

    @torch.no_grad()
    def detect(self, images, score_threshold: float = 0.05, iou_threshold: float = 0.5):
        pred = self.predict(images)
        boxes = clip_boxes(self.to_boxes(pred).reshape(-1, 4), *(self.cfg.image_size,) * 2)
        boxes = boxes.reshape(len(images), -1, 4)
        # class-specific confidence = Pr(class | object) * confidence (YOLO v1, eq. 1)
        scores, labels = (
            (pred[..., 5:].softmax(-1) * pred[..., 4:5])
            .reshape(len(images), -1, self.cfg.n_classes)
            .max(-1)
        )
        results = []
        for image_boxes, image_scores, image_labels in zip(boxes, scores, labels):
            keep = image_scores > score_threshold
            b, sc, lb = image_boxes[keep], image_scores[keep], image_labels[keep]
            keep = batched_nms(b, sc, lb, iou_threshold)[:20]
            results.append((b[keep], sc[keep], lb[keep]))
        return results


def build_detector(cfg: DetectorConfig) -> nn.Module:
    if cfg.detector == "sliding":
        return SlidingWindowDetector(cfg)
    if cfg.detector == "two-stage":
        return TwoStageDetector(cfg)
    return YoloDetector(cfg)
