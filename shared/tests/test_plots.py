import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from shared.plots import (
    figure_to_array,
    images_to_grid,
    plot_curves,
    save_gif,
    save_image_grid,
    save_labelled_grid,
)


def test_grid_places_each_image_in_its_cell():
    images = np.stack([np.full((1, 3, 3), i / 5) for i in range(6)])
    grid = images_to_grid(images, nrow=3, pad=1)
    assert grid.shape == (2 * 4 + 1, 3 * 4 + 1)
    np.testing.assert_allclose(grid[1:4, 1:4], 0.0)
    np.testing.assert_allclose(grid[5:8, 9:12], 1.0)  # image 5 is in row 1, column 2


def test_colour_grid_is_height_width_channels():
    assert images_to_grid(torch.rand(4, 3, 5, 5), nrow=2).shape == (13, 13, 3)


def test_png_and_gif_files_are_valid_images(tmp_path):
    plot_curves(tmp_path / "loss.png", {"train": ([1, 2, 3], [3, 2, 1]), "val": ([1, 3], [3, 2])})
    save_image_grid(tmp_path / "grid.png", np.random.rand(8, 8, 8), scale=2)
    save_image_grid(tmp_path / "titled.png", np.random.rand(4, 1, 8, 8), titles=list("abcd"))
    save_image_grid(tmp_path / "titled_rgb.png", np.random.rand(4, 3, 8, 8), titles=list("abcd"))
    frames = [np.random.rand(8, 8) for _ in range(3)]
    save_gif(tmp_path / "anim.gif", frames, scale=2)
    for name in ("loss.png", "grid.png", "titled.png"):
        assert Image.open(tmp_path / name).format == "PNG"
    gif = Image.open(tmp_path / "anim.gif")
    assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (16, 16)


def test_figure_becomes_an_rgb_array():
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    frame = figure_to_array(fig, dpi=50)
    assert frame.shape == (50, 100, 3) and frame.dtype == np.uint8


def test_labelled_grid_refuses_images_that_do_not_fill_it_and_writes_a_png(tmp_path):
    images = np.random.default_rng(0).random((6, 1, 8, 8))
    with pytest.raises(ValueError, match="do not fill 2 rows x 2 columns"):
        save_labelled_grid(tmp_path / "g.png", images, ["a", "b"], ["x", "y"])
    save_labelled_grid(tmp_path / "g.png", images, ["a", "b"], ["x", "y", "z"])
    with Image.open(tmp_path / "g.png") as png:
        assert png.format == "PNG" and png.size[0] > png.size[1]  # 3 columns, 2 rows
