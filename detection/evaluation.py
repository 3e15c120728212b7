"""Average precision by hand: Pascal VOC's mAP@0.5 and COCO's mAP@[0.5:0.95].

Inputs, per image: predictions (boxes (K, 4), scores (K,), labels (K,)) and ground truth
(boxes (G, 4), labels (G,)), as NumPy arrays or tensors.

For one class, sort every detection of every image by score. Walking down that list, each
detection is a true positive if it overlaps a not-yet-matched true box of its class by at least
the IoU threshold, else a false positive (a second detection of a matched box is a duplicate,
hence false). After k detections, precision = TP_k / k and recall = TP_k / (number of true
boxes). AP is the area under the precision-recall curve after making precision monotone
(each point takes the best precision at any higher recall).
"""

from __future__ import annotations

import numpy as np


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) boxes -> (N, M)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _class_detections(predictions, ground_truth, label):
    """All detections of one class as (scores, image index, boxes) and the true boxes per image."""
    scores, images, boxes = [], [], []
    truths = []
    for i, ((p_boxes, p_scores, p_labels), (g_boxes, g_labels)) in enumerate(
        zip(predictions, ground_truth)
    ):
        p_boxes, p_scores, p_labels = _np(p_boxes), _np(p_scores), _np(p_labels)
        mine = p_labels == label
        scores.append(p_scores[mine])
        images.append(np.full(mine.sum(), i))
        boxes.append(p_boxes[mine].reshape(-1, 4))
        truths.append(_np(g_boxes)[_np(g_labels) == label].reshape(-1, 4))
    return np.concatenate(scores), np.concatenate(images), np.concatenate(boxes), truths


def voc_precision_recall(predictions, ground_truth, label, iou_threshold=0.5):
    """Precision and recall after each detection of the class, best score first (VOC matching:
    each detection is compared with the true box it overlaps most)."""
    scores, images, boxes, truths = _class_detections(predictions, ground_truth, label)
    n_true = sum(len(t) for t in truths)
    order = np.argsort(-scores, kind="mergesort")
    matched = [np.zeros(len(t), dtype=bool) for t in truths]
    tp = np.zeros(len(order))
    for rank, d in enumerate(order):
        truth = truths[images[d]]
        if len(truth) == 0:
            continue
        overlaps = iou_matrix(boxes[d : d + 1], truth)[0]
        best = overlaps.argmax()
        if overlaps[best] >= iou_threshold and not matched[images[d]][best]:
            matched[images[d]][best] = True
            tp[rank] = 1
    cum_tp = np.cumsum(tp)
    precision = cum_tp / np.arange(1, len(tp) + 1)
    recall = cum_tp / max(n_true, 1)
    return precision, recall, n_true


def all_point_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the monotone precision envelope, over every recall step (VOC 2010+)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # p(r) = max precision at recall >= r
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_map(predictions, ground_truth, n_classes: int, iou_threshold: float = 0.5) -> dict:
    """mAP at one IoU threshold with all-point interpolation; classes without true boxes skipped."""
    per_class, curves = {}, {}
    for label in range(n_classes):
        precision, recall, n_true = voc_precision_recall(
            predictions, ground_truth, label, iou_threshold
        )
        if n_true == 0:
            continue
        per_class[label] = all_point_ap(precision, recall)
        curves[label] = (precision, recall)
    return {"map": float(np.mean(list(per_class.values()))), "ap": per_class, "curves": curves}


def coco_map(
    predictions, ground_truth, n_classes: int, iou_thresholds=None, max_detections: int = 100
) -> float:
    """COCO's AP: the mean over IoU thresholds 0.50:0.05:0.95 and classes of 101-point
    interpolated precision. COCO matching: within an image, detections (best first) take the
    unmatched true box they overlap most, if that IoU reaches the threshold."""
    if iou_thresholds is None:
        iou_thresholds = np.linspace(0.5, 0.95, 10)
    recall_points = np.linspace(0, 1, 101)
    results = []
    for label in range(n_classes):
        per_image = []
        n_true = 0
        for (p_boxes, p_scores, p_labels), (g_boxes, g_labels) in zip(predictions, ground_truth):
            mine = _np(p_labels) == label
            scores = _np(p_scores)[mine]
            order = np.argsort(-scores, kind="mergesort")[:max_detections]
            boxes = _np(p_boxes)[mine].reshape(-1, 4)[order]
            truth = _np(g_boxes)[_np(g_labels) == label].reshape(-1, 4)
            n_true += len(truth)
            iou = iou_matrix(boxes, truth) if len(boxes) and len(truth) else None
            per_image.append((scores[order], iou, len(truth)))
        if n_true == 0:
            continue
        for threshold in iou_thresholds:
            all_scores, all_tp = [], []
            for scores, iou, g in per_image:
                tp = np.zeros(len(scores))
                taken = np.zeros(g, dtype=bool)
                for d in range(len(scores)):
                    if iou is None:
                        break
                    candidates = np.where(taken, -1.0, iou[d])
                    best = candidates.argmax()
                    if candidates[best] >= min(threshold, 1 - 1e-10):
                        taken[best] = True
                        tp[d] = 1
                all_scores.append(scores)
                all_tp.append(tp)
            scores, tp = np.concatenate(all_scores), np.concatenate(all_tp)
            tp = tp[np.argsort(-scores, kind="mergesort")]
            cum_tp, cum_fp = np.cumsum(tp), np.cumsum(1 - tp)
            recall = cum_tp / n_true
            precision = cum_tp / np.maximum(cum_tp + cum_fp, np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            # precision at the first point reaching each recall level; 0 where never reached
            where = np.searchsorted(recall, recall_points, side="left")
            sampled = np.zeros(len(recall_points))
            reached = where < len(precision)
            sampled[reached] = precision[where[reached]]
            results.append(sampled.mean())
    return float(np.mean(results)) if results else 0.0
