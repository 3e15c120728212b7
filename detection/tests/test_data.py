import json

import numpy as np
import pytest
from data import load_image_file, make_scenes, read_coco, read_voc, scenes_from_annotations
from evaluation import iou_matrix
from PIL import Image

from shared.errors import DataError


def test_scenes_are_seeded_and_boxes_lie_inside_the_canvas():
    a = make_scenes(20, "train", canvas=64, seed=3)
    b = make_scenes(20, "train", canvas=64, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    for boxes, labels in zip(a.boxes, a.labels):
        assert 1 <= len(boxes) <= 4 and len(boxes) == len(labels)
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 64)
        assert np.all(boxes[:, 2:] > boxes[:, :2])


def test_each_box_holds_ink_and_the_overlap_limit_holds():
    scenes = make_scenes(30, "test", max_overlap=0.05, seed=1)
    for image, boxes in zip(scenes.images, scenes.boxes):
        for x1, y1, x2, y2 in boxes.astype(int):
            assert image[0, y1:y2, x1:x2].max() > 0.25
        if len(boxes) > 1:
            iou = iou_matrix(boxes, boxes)
            assert iou[~np.eye(len(boxes), dtype=bool)].max() <= 0.05


def test_clutter_adds_ink_outside_the_digits():
    plain = make_scenes(10, "train", seed=0)
    cluttered = make_scenes(10, "train", clutter=3, seed=0)
    assert cluttered.images.sum() > plain.images.sum()


def test_voc_reader_on_a_test_written_file(tmp_path):
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>40</width><height>20</height>"
        "<depth>1</depth></size><object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
        "<xmax>11</xmax><ymax>12</ymax></bndbox></object><object><name>dog</name><bndbox>"
        "<xmin>20</xmin><ymin>5</ymin><xmax>30</xmax><ymax>15</ymax></bndbox></object>"
        "</annotation>"
    )
    ann = read_voc(tmp_path / "a.xml")
    assert (ann.filename, ann.width, ann.height) == ("a.png", 40, 20)
    np.testing.assert_array_equal(ann.boxes, [[1, 2, 11, 12], [20, 5, 30, 15]])
    assert ann.names == ["cat", "dog"]


def test_coco_reader_converts_xywh_to_corners(tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "b.png", "width": 32, "height": 16}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [4, 2, 10, 6]}],
        "categories": [{"id": 3, "name": "seven"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    [ann] = read_coco(tmp_path / "c.json")
    np.testing.assert_array_equal(ann.boxes, [[4, 2, 14, 8]])
    assert ann.names == ["seven"] and ann.filename == "b.png"


def test_annotated_images_are_resized_with_their_boxes(tmp_path):
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>40</width><height>20</height>"
        "</size><object><name>cat</name><bndbox><xmin>4</xmin><ymin>2</ymin><xmax>12</xmax>"
        "<ymax>10</ymax></bndbox></object></annotation>"
    )
    scenes = scenes_from_annotations([read_voc(tmp_path / "a.xml")], tmp_path, canvas=32)
    assert scenes.images.shape == (1, 1, 32, 32) and scenes.classes == ("cat",)
    np.testing.assert_allclose(scenes.boxes[0], [[3.2, 3.2, 9.6, 16.0]])


def test_broken_annotation_files_are_data_errors(tmp_path):
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a readable Pascal VOC"):
        read_voc(tmp_path / "bad.xml")
    with pytest.raises(DataError, match="not a readable COCO"):
        read_coco(tmp_path / "bad.json")


def test_non_image_is_a_data_error(tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(DataError, match="is not an image"):
        load_image_file(tmp_path / "x.png")
