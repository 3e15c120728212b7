import numpy as np
import pytest
from evaluation import all_point_ap, coco_map, voc_map

BOX_A = [0.0, 0.0, 10.0, 10.0]
BOX_B = [20.0, 20.0, 30.0, 34.0]


def gt(boxes, labels):
    return np.array(boxes, dtype=float).reshape(-1, 4), np.array(labels)


def pred(boxes, scores, labels):
    return np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores), np.array(labels)


def test_perfect_predictions_give_map_one():
    truth = [gt([BOX_A, BOX_B], [0, 1]), gt([BOX_B], [1])]
    preds = [pred([BOX_A, BOX_B], [0.9, 0.8], [0, 1]), pred([BOX_B], [0.7], [1])]
    assert voc_map(preds, truth, 2)["map"] == 1.0
    assert coco_map(preds, truth, 2) == pytest.approx(1.0)


def test_duplicate_detections_count_as_false_positives():
    truth = [gt([BOX_A], [0])]
    # The duplicate scores higher than the original would if it came second: here it comes
    # second, so precision goes 1, 1/2 and AP (area under the envelope) is still 1 ...
    preds = [pred([BOX_A, BOX_A], [0.9, 0.8], [0, 0])]
    assert voc_map(preds, truth, 1)["map"] == 1.0
    # ... but a duplicate ranked above a second true box costs precision at full recall.
    truth = [gt([BOX_A, BOX_B], [0, 0])]
    preds = [pred([BOX_A, BOX_A, BOX_B], [0.9, 0.8, 0.7], [0, 0, 0])]
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3
    assert voc_map(preds, truth, 1)["map"] == pytest.approx(0.5 + 1 / 3)


def test_small_case_worked_on_paper():
    # Three true boxes of class 0 in two images; four detections, best first:
    #   0.9 hits image 0's box A (TP), 0.8 misses everything (FP), 0.7 hits image 1's box (TP),
    #   0.6 is a second hit on box A (FP). Box B of image 0 is never found.
    # precision: 1, 1/2, 2/3, 1/2; recall: 1/3, 1/3, 2/3, 2/3
    # envelope: 1 up to recall 1/3, 2/3 up to 2/3, 0 beyond -> AP = 1/3 + 1/3 * 2/3 = 5/9
    truth = [gt([BOX_A, BOX_B], [0, 0]), gt([BOX_A], [0])]
    preds = [
        pred([BOX_A, [40, 40, 50, 50], BOX_A], [0.9, 0.8, 0.6], [0, 0, 0]),
        pred([BOX_A], [0.7], [0]),
    ]
    result = voc_map(preds, truth, 1)
    assert result["map"] == pytest.approx(5 / 9)
    precision, recall = result["curves"][0]
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_all_point_interpolation_takes_the_best_precision_to_the_right():
    assert all_point_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == 1.0


def test_a_box_below_the_iou_threshold_is_a_miss():
    truth = [gt([BOX_A], [0])]
    shifted = [6.0, 0.0, 16.0, 10.0]  # IoU 4/16 = 0.25
    assert voc_map([pred([shifted], [0.9], [0])], truth, 1)["map"] == 0.0
    assert voc_map([pred([shifted], [0.9], [0])], truth, 1, iou_threshold=0.2)["map"] == 1.0


def random_problem(seed, n_images=20, n_classes=3):
    rng = np.random.default_rng(seed)
    truth, preds = [], []
    for _ in range(n_images):
        k = rng.integers(0, 5)
        xy = rng.uniform(0, 50, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (k, 2))], 1)
        labels = rng.integers(0, n_classes, k)
        truth.append((boxes, labels))
        # detections: jittered true boxes (some), plus random ones
        keep = rng.random(k) < 0.8
        jittered = boxes[keep] + rng.normal(0, 2.0, (keep.sum(), 4))
        m = rng.integers(0, 4)
        xy = rng.uniform(0, 50, (m, 2))
        extra = np.concatenate([xy, xy + rng.uniform(5, 20, (m, 2))], 1)
        p_boxes = np.concatenate([jittered, extra])
        p_labels = np.concatenate([labels[keep], rng.integers(0, n_classes, m)])
        preds.append((p_boxes, rng.random(len(p_boxes)), p_labels))
    return preds, truth


def pycocotools_stats(preds, truth, n_classes):
    coco_module = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    import contextlib
    import io

    images = [{"id": i, "width": 100, "height": 100} for i in range(len(truth))]
    annotations, results = [], []
    for i, (boxes, labels) in enumerate(truth):
        for box, label in zip(boxes, labels):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    for i, (boxes, scores, labels) in enumerate(preds):
        for box, score, label in zip(boxes, scores, labels):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(label),
                    "score": float(score),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = coco_module.COCO()
        coco.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in range(n_classes)],
        }
        coco.createIndex()
        evaluation = cocoeval.COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_equals_pycocotools_on_random_predictions(seed):
    preds, truth = random_problem(seed)
    stats = pycocotools_stats(preds, truth, 3)
    assert coco_map(preds, truth, 3) == pytest.approx(stats[0], abs=1e-12)
    assert coco_map(preds, truth, 3, iou_thresholds=[0.5]) == pytest.approx(stats[1], abs=1e-12)
