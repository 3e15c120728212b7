"""Train an object detector on generated scenes of digits (or on your own annotated images),
then measure mAP@0.5 (VOC, all-point), COCO mAP@[0.5:0.95] and images per second on held-out
scenes.

    python train.py                          # the default detector on digit scenes
    python train.py --detector yolo          # or sliding, two-stage
    python train.py --dataset voc --annotations my_voc/Annotations --image-root my_voc/JPEGImages
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import torch
from data import make_scenes, read_coco, read_voc, scenes_from_annotations
from evaluation import coco_map, voc_map
from model import DETECTORS, DetectorConfig, build_detector

from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from shared.cli import RunConfig, arg, cli_main
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.plots import plot_curves, save_figure
from shared.runtime import get_device, seed_everything, set_threads

PROJECT = Path(__file__).parent


@dataclass
class TrainConfig(RunConfig):
    detector: str = arg("two-stage", "which detector to train", choices=DETECTORS)
    dataset: str = arg(
        "digits",
        "digits or mnist: generated scenes; voc or coco: your annotated images",
        choices=("digits", "mnist", "voc", "coco"),
    )
    annotations: str = arg("", "with --dataset voc: folder of .xml files; coco: the .json file")
    image_root: str = arg("", "folder of the annotated images (default: beside the annotations)")
    train_scenes: int = arg(2000, "generated training scenes", min=1)
    test_scenes: int = arg(300, "generated held-out scenes", min=1)
    canvas: int = arg(64, "scene side in pixels (a multiple of 8)", min=32)
    max_digits: int = arg(4, "most digits in one scene", min=1)
    clutter: int = arg(0, "random non-digit strokes per scene", min=0)
    max_overlap: float = arg(0.1, "largest IoU allowed between two digits' boxes", min=0, max=1)
    epochs: int = arg(12, "passes over the training scenes", min=1)
    batch_size: int = arg(32, "scenes per step", min=1)
    lr: float = arg(2e-3, "peak learning rate (AdamW, cosine decay)", min=0, min_inclusive=False)
    weight_decay: float = arg(1e-4, "AdamW weight decay", min=0)
    width: int = arg(16, "channels of the first backbone stage", min=4)
    roi_op: str = arg("align", "two-stage region features", choices=("align", "pool"))
    score_threshold: float = arg(0.05, "lowest score kept when evaluating", min=0, max=1)
    threads: int = arg(0, "torch CPU threads (0: torch's default)", min=0)

    def check(self):
        if self.canvas % 8:
            raise UserError(f"--canvas must be a multiple of 8, got {self.canvas}")
        if self.dataset in ("voc", "coco") and not self.annotations:
            raise UserError(f"--dataset {self.dataset} needs --annotations")


def load_data(cfg: TrainConfig):
    """(train scenes, test scenes): generated, or your annotated images split 80/20 by seed."""
    if cfg.dataset in ("digits", "mnist"):
        options = dict(
            canvas=cfg.canvas,
            max_digits=cfg.max_digits,
            clutter=cfg.clutter,
            max_overlap=cfg.max_overlap,
            dataset=cfg.dataset,
            data_dir=cfg.data_dir,
            seed=cfg.seed,
        )
        return (
            make_scenes(cfg.train_scenes, "train", **options),
            make_scenes(cfg.test_scenes, "test", **options),
        )
    path = Path(cfg.annotations)
    if cfg.dataset == "voc":
        if not path.is_dir():
            raise UserError(f"--annotations {path} is not a folder of VOC .xml files")
        annotations = [read_voc(p) for p in sorted(path.glob("*.xml"))]
    else:
        if not path.is_file():
            raise UserError(f"--annotations {path} is not a COCO .json file")
        annotations = read_coco(path)
    if len(annotations) < 2:
        raise UserError(f"{path}: need at least 2 annotated images, found {len(annotations)}")
    root = Path(cfg.image_root) if cfg.image_root else (path if path.is_dir() else path.parent)
    order = np.random.default_rng(cfg.seed).permutation(len(annotations))
    cut = max(1, int(0.8 * len(order)))
    classes = sorted({name for a in annotations for name in a.names})
    train = scenes_from_annotations(
        [annotations[i] for i in order[:cut]], root, cfg.canvas, classes
    )
    test = scenes_from_annotations([annotations[i] for i in order[cut:]], root, cfg.canvas, classes)
    return train, test


def targets_of(scenes, index, device):
    return [
        {
            "boxes": torch.from_numpy(scenes.boxes[i]).to(device),
            "labels": torch.from_numpy(scenes.labels[i]).to(device),
        }
        for i in index
    ]


def evaluate(model, scenes, cfg: TrainConfig, device) -> dict:
    """Detect on every held-out scene; mAP@0.5, COCO mAP and images per second."""
    model.eval()
    images = torch.from_numpy(scenes.images).to(device)
    predictions = []
    started = time.perf_counter()
    for batch in images.split(64):
        predictions += [
            tuple(t.cpu() for t in result)
            for result in model.detect(batch, score_threshold=cfg.score_threshold)
        ]
    seconds = time.perf_counter() - started
    truth = list(zip(scenes.boxes, scenes.labels))
    n_classes = len(scenes.classes)
    voc = voc_map(predictions, truth, n_classes)
    return {
        "predictions": predictions,
        "voc": voc,
        "coco_map": coco_map(predictions, truth, n_classes),
        "images_per_s": len(images) / seconds,
    }


def plot_detections(path, scenes, predictions, score_threshold=0.5, n=8):
    """Held-out scenes with true boxes (dashed white) and detections (coloured, labelled)."""
    n = min(n, len(scenes))
    cols = math.ceil(n / 2)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.6), squeeze=False)
    colours = plt.cm.tab10.colors
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, i in zip(axes.flat, range(n)):
        ax.imshow(scenes.images[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
        for box in scenes.boxes[i]:
            ax.add_patch(
                patches.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec="white", ls="--")
            )
        for box, score, label in zip(*predictions[i]):
            if score < score_threshold:
                continue
            box = box.numpy()
            colour = colours[int(label) % 10]
            ax.add_patch(patches.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec=colour))
            ax.text(
                box[0], box[1] - 1, f"{scenes.classes[label]} {score:.2f}", color=colour, fontsize=7
            )
    save_figure(fig, path)


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg.train_scenes, cfg.test_scenes, cfg.epochs = 16, 4, 1
        cfg.batch_size, cfg.width = 8, 4
    run = start_run(f"detection ({cfg.detector})", cfg, PROJECT)
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    device = get_device(cfg.device)

    train, test = load_data(cfg)
    model_cfg = DetectorConfig(
        detector=cfg.detector,
        n_classes=len(train.classes),
        image_size=cfg.canvas,
        width=cfg.width,
        roi_op=cfg.roi_op,
    )
    model = build_detector(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    history = {"step": [], "loss": []}
    first_epoch = 0
    checkpoint_path = run.path / "model.pt"
    if cfg.resume:
        state = load_checkpoint(checkpoint_path, required=("model", "optimizer", "epoch"))
        load_model_state(model, state["model"], checkpoint_path)
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, history = state["epoch"] + 1, state["history"]
        torch.set_rng_state(state["rng"])

    images = torch.from_numpy(train.images).to(device)
    step = first_epoch * steps_per_epoch
    for epoch in range(first_epoch, cfg.epochs):
        model.train()
        order = torch.randperm(len(train))
        for index in progress(order.split(cfg.batch_size), desc=f"epoch {epoch + 1}"):
            # cosine decay from lr to 0 over the whole run, after a 5% linear warm-up
            warmup = max(1, total_steps // 20)
            scale = (
                min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            )
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * scale
            _, losses = model(images[index], targets_of(train, index.tolist(), device))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history["step"].append(step)
            history["loss"].append(loss.item())
            if step % 20 == 0:
                run.log(step=step, epoch=epoch, **{k: v.item() for k, v in losses.items()})
            step += 1
        save_checkpoint(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "config": asdict(model_cfg),
                "classes": list(train.classes),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "history": history,
                "rng": torch.get_rng_state(),
            },
        )

    result = evaluate(model, test, cfg, device)
    voc = result["voc"]
    plot_curves(
        run.path / "loss.png",
        {"train": (history["step"], history["loss"])},
        ylabel="total loss",
        logy=True,
    )
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (precision, recall) in voc["curves"].items():
        ax.plot(recall, precision, label=f"{test.classes[label]} AP {voc['ap'][label]:.2f}")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title=f"{cfg.detector}: mAP@0.5 = {voc['map']:.3f}",
    )
    ax.legend(fontsize=7, loc="lower left")
    save_figure(fig, run.path / "pr_curves.png")
    plot_detections(run.path / "detections.png", test, result["predictions"])
    return run.finish(
        metric="map50",
        value=voc["map"],
        higher_is_better=True,
        detector=cfg.detector,
        coco_map=result["coco_map"],
        images_per_s=result["images_per_s"],
        ap_per_class={test.classes[k]: v for k, v in voc["ap"].items()},
        test_scenes=len(test),
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
