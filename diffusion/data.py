"""Training images for the diffusion model: the shared datasets, or any folder of pictures.

Images come back as float32 (N, C, H, W) scaled to [-1, 1], the range the forward process
assumes (x_T ~ N(0, I) should dwarf the data), with labels, or None for a folder.
"""

from __future__ import annotations

import numpy as np

from shared.data import IMAGE_DATASETS, load_image_folder, load_images


def load_training_images(
    dataset: str, size: int, data_dir: str = "", folder: str = "", channels: int = 1
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(x in [-1, 1], labels or None, number of classes) for a dataset name or a folder."""
    if dataset == "folder":
        x, y, n_classes = load_image_folder(folder, size, channels), None, 0
    else:
        x, y = load_images(dataset, "train", data_dir or None, size=size)
        n_classes = len(IMAGE_DATASETS[dataset].classes)
    return x * 2 - 1, y, n_classes
