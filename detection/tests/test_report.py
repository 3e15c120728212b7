import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from report import draw_detections, label_boxes  # noqa: E402


def test_labels_that_would_cover_each_other_move_a_hand_worked_case():
    # Labels 10 x 4 on a 64 x 64 image. Box A's label goes above it, at (5, 16)-(15, 20). Box B
    # starts 3 pixels to the right at the same height: above would cover A's label, inside its
    # top edge (y 20-24) would cover box A, below it (y 40-44) is clear. Box C touches the top:
    # above would leave the image, inside its top edge covers nothing.
    boxes = [(5, 20, 20, 40), (8, 20, 23, 40), (30, 0, 45, 20)]
    spots = label_boxes(boxes, [(10, 4)] * 3, (64, 64))
    assert spots == [(5.0, 16.0, 15.0, 20.0), (8.0, 40.0, 18.0, 44.0), (30.0, 0.0, 40.0, 4.0)]


def test_a_label_with_no_clear_place_still_covers_no_other_label():
    # Two boxes filling the image's height: every place of B's label covers box A, so it takes
    # the first place free of labels (inside its top edge) rather than covering A's label.
    boxes = [(0, 4, 20, 64), (2, 4, 22, 64)]
    spots = label_boxes(boxes, [(10, 4)] * 2, (64, 64))
    assert spots == [(0.0, 0.0, 10.0, 4.0), (2.0, 4.0, 12.0, 8.0)]


def test_a_label_near_the_right_edge_is_shifted_into_the_image():
    assert label_boxes([(60, 30, 64, 40)], [(10, 4)], (64, 64)) == [(54.0, 26.0, 64.0, 30.0)]


def test_drawn_labels_of_neighbouring_boxes_do_not_overlap():
    fig, ax = plt.subplots(figsize=(2.2, 2.2))
    ax.imshow(np.zeros((64, 64)), cmap="gray")
    boxes = np.array([[10, 20, 24, 40], [14, 22, 28, 42], [18, 24, 32, 44]], float)
    draw_detections(ax, boxes, np.array([0.9, 0.8, 0.77]), np.array([5, 3, 8]), list("0123456789"))
    fig.canvas.draw()
    extents = [t.get_window_extent() for t in ax.texts]
    assert [t.get_text() for t in ax.texts] == ["5 0.90", "3 0.80", "8 0.77"]
    for i, a in enumerate(extents):
        for b in extents[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)
