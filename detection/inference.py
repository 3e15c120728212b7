"""Detect objects in an image with a trained detector and draw the boxes.

    python inference.py                          # a fresh held-out scene, runs/latest/model.pt
    python inference.py photo.png --out boxes.png --score-threshold 0.5

Each detection is printed as `label score x1 y1 x2 y2` in the image's own pixels. The image is
turned grey and resized to the detector's canvas; dark ink on a light ground is inverted first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from data import load_image_file, make_scenes
from model import DetectorConfig, build_detector
from report import draw_detections

from shared.checkpoint import load_model_state
from shared.cli import arg, cli_main
from shared.logging import default_checkpoint
from shared.plots import save_figure
from shared.runtime import get_device, set_threads
from shared.state import read_state

PROJECT = Path(__file__).parent


@dataclass
class InferenceConfig:
    image: str = arg("", "image file (default: a generated held-out scene)", positional=True)
    checkpoint: str = arg("", "detector checkpoint (default: runs/latest/model.pt)")
    out: str = arg("", "where to draw the boxes (default: inference.png beside the checkpoint)")
    score_threshold: float = arg(0.5, "lowest score shown", min=0, max=1)
    seed: int = arg(0, "which generated scene, when no image is given", min=0)
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = arg(0, "torch CPU threads (0: torch's default)", min=0)


def resize(grey: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of one (H, W) image to (size, size)."""
    tensor = torch.from_numpy(grey)[None, None]
    return torch.nn.functional.interpolate(
        tensor, size=(size, size), mode="bilinear", antialias=True
    )[0, 0].numpy()


def main(cfg: InferenceConfig) -> list[tuple[str, float, list[float]]]:
    set_threads(cfg.threads)
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(PROJECT, "model.pt")
    state = read_state(path, required=("model", "config", "classes"))
    model_cfg = DetectorConfig(**state["config"])
    model = build_detector(model_cfg)
    load_model_state(model, state["model"], path)
    device = get_device(cfg.device)
    model.to(device).eval()

    size = model_cfg.image_size
    if cfg.image:
        original = load_image_file(cfg.image)
    else:
        original = make_scenes(1, "test", canvas=size, seed=cfg.seed).images[0, 0]
    height, width = original.shape
    image = torch.from_numpy(resize(original, size))[None, None].to(device)
    boxes, scores, labels = (t.cpu() for t in model.detect(image, cfg.score_threshold)[0])
    boxes = boxes * torch.tensor([width / size, height / size] * 2)  # back to the image's pixels

    fig, ax = plt.subplots(figsize=(4, 4 * height / width))
    ax.imshow(original, cmap="gray")
    ax.axis("off")
    found = []
    for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        name = state["classes"][label]
        found.append((name, score, box))
        print(f"{name} {score:.3f} " + " ".join(f"{v:.1f}" for v in box))
    draw_detections(ax, boxes.numpy(), scores, labels, state["classes"], colours=("lime",))
    if not found:
        print(f"no objects found above score {cfg.score_threshold}")
    out = Path(cfg.out) if cfg.out else path.parent / "inference.png"
    save_figure(fig, out)
    print(f"boxes drawn on {out}")
    return found


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
