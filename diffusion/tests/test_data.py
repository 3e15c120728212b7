"""Any folder of pictures becomes training images."""

import numpy as np
import pytest
from data import load_training_images
from PIL import Image

from shared.data import load_image_folder as load_folder
from shared.errors import DataError


def test_a_folder_of_images_is_cropped_resized_and_scaled(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 20), (255, 255, 255)).save(tmp_path / "wide.png")
    Image.new("L", (10, 10), 0).save(tmp_path / "sub" / "black.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    grey = load_folder(tmp_path, size=8, channels=1)
    assert grey.shape == (2, 1, 8, 8) and grey.dtype == np.float32
    assert np.allclose(sorted(grey.mean(axis=(1, 2, 3))), [0.0, 1.0])
    assert load_folder(tmp_path, size=4, channels=3).shape == (2, 3, 4, 4)
    x, y, n_classes = load_training_images("folder", 8, folder=str(tmp_path))
    assert x.min() == -1 and x.max() == 1 and y is None and n_classes == 0


def test_an_empty_or_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_folder(tmp_path, size=8, channels=1)
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "missing", size=8, channels=1)
