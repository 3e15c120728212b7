"""Training images for the image GANs: the shared datasets, or any folder of pictures.

A folder is read recursively (PNG, JPEG, BMP, GIF, WebP, TIFF); each picture is cropped to its
centred square, resized to the side asked for, and read as grey (1 channel) or colour (3).
Folders have no labels and no test split: the GANs train on every image in them.
"""

from __future__ import annotations

from shared.data import IMAGE_DATASETS, load_image_folder, load_images

NATIVE_SIZES = {"digits": 16, "mnist": 28, "fashion-mnist": 28}  # the judge's sides


def load_training_images(
    dataset: str, size: int, data_dir: str, image_dir: str, channels: int, seed: int
):
    """(x_train in [0, 1] (N, C, S, S), y_train (N,) or None, n_classes) for a name or a folder."""
    if dataset == "folder":
        return load_image_folder(image_dir, size, channels), None, 0
    x, y = load_images(dataset, "train", data_dir, size=size, seed=seed)
    return x, y, len(IMAGE_DATASETS[dataset].classes)
