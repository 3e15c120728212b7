"""Train an object detector on generated scenes of digits (or on your own annotated images),
then measure mAP@0.5 (VOC, all-point), COCO mAP@[0.5:0.95] and images per second on held-out
scenes.

    python train.py                          # the default detector on digit scenes
    python train.py --detector yolo          # or sliding, two-stage
    python train.py --preset mnist --data-dir DATA        # scenes of real MNIST digits
    python train.py --dataset voc --annotations my_voc/Annotations --image-root my_voc/JPEGImages
    torchrun --standalone --nproc_per_node 2 train.py      # 2 processes (GPUs), one result

Under torchrun every process trains on its share of each global batch (--batch-size) and the
weights are those one process would reach with the whole batch; only the first process logs,
evaluates and writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import report
import torch
from data import make_scenes, read_coco, read_voc, scenes_from_annotations
from evaluation import coco_map, voc_map
from model import DETECTORS, DetectorConfig, build_detector

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.runtime import (
    PRECISION_HELP,
    PRECISIONS,
    Distributed,
    check_fits_in_memory,
    count_parameters,
    init_distributed,
    mixed_precision,
    seed_everything,
    set_threads,
)
from shared.state import TrainingState, load_for_resume

PROJECT = Path(__file__).parent
CHECKPOINT = "model.pt"
# What decides the data, the model and the learning-rate schedule: a resumed run must keep them.
MUST_MATCH = (
    "detector",
    "dataset",
    "annotations",
    "train_scenes",
    "canvas",
    "max_digits",
    "clutter",
    "max_overlap",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "width",
    "roi_op",
)
MNIST_SCENES = dict(dataset="mnist", train_scenes=4000, test_scenes=1000, val_scenes=200)


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "mnist": Preset(
            "two-stage detector on 64x64 scenes of real MNIST digits (train digits for training "
            "scenes, test digits for test scenes)",
            dict(detector="two-stage", epochs=16, **MNIST_SCENES),
            anchor="torchvision's detection references: the same two-stage design (RPN, RoI "
            "align, box weights 10, 10, 5, 5, warm-up then decay); their Faster R-CNN "
            "ResNet-50-FPN reaches COCO box AP 37.0",
            report=("coco_map", "images_per_s"),
        ),
        "mnist-yolo": Preset(
            "YOLO v1 on the same scenes of real MNIST digits",
            dict(detector="yolo", epochs=30, **MNIST_SCENES),
            anchor="the two-stage row beside it (YOLO v1, Redmon et al. 2016: one pass per image)",
            report=("coco_map", "images_per_s"),
        ),
    }

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
    val_scenes: int = arg(
        60, "generated validation scenes (test digits, other scenes), scored every epoch", min=1
    )
    canvas: int = arg(64, "scene side in pixels (a multiple of 8)", min=32)
    max_digits: int = arg(4, "most digits in one scene", min=1)
    clutter: int = arg(0, "random non-digit strokes per scene", min=0)
    max_overlap: float = arg(0.1, "largest IoU allowed between two digits' boxes", min=0, max=1)
    epochs: int = arg(12, "passes over the training scenes", min=1)
    batch_size: int = arg(
        32, "scenes per step: the global batch, split over torchrun processes", min=1
    )
    lr: float = arg(
        2e-3,
        "peak learning rate for the global batch (AdamW, cosine decay)",
        min=0,
        min_inclusive=False,
    )
    weight_decay: float = arg(1e-4, "AdamW weight decay", min=0)
    width: int = arg(16, "channels of the first backbone stage", min=4)
    roi_op: str = arg("align", "two-stage region features", choices=("align", "pool"))
    precision: str = arg("auto", PRECISION_HELP, choices=PRECISIONS)
    score_threshold: float = arg(0.05, "lowest score kept when evaluating", min=0, max=1)
    log_every: int = arg(20, "steps between logged losses", min=1)
    threads: int = arg(0, "torch CPU threads (0: torch's default)", min=0)

    def check(self):
        if self.canvas % 8:
            raise UserError(f"--canvas must be a multiple of 8, got {self.canvas}")
        if self.dataset in ("voc", "coco") and not self.annotations:
            raise UserError(f"--dataset {self.dataset} needs --annotations")


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A tiny backbone, three epochs of two steps each, every step logged."""
    return replace(
        cfg,
        train_scenes=16,
        test_scenes=4,
        val_scenes=4,
        epochs=3,
        batch_size=8,
        width=4,
        log_every=1,
    )


def check_memory(cfg: TrainConfig, device, processes: int) -> None:
    """Before anything is allocated: weights, gradients and AdamW's two moments (counted with
    10 classes: the class count barely changes them); every scene; the feature maps of this
    process's share of a training batch (about 12 full-resolution maps of --width channels per
    image, the later stages adding half as much again), twice over for the backward pass, and
    of a test batch; and the fixed boxes (sliding windows or anchors) with their IoU against a
    scene's digits."""
    model_cfg = DetectorConfig(cfg.detector, 10, cfg.canvas, cfg.width, roi_op=cfg.roi_op)
    n_params = count_parameters(lambda: build_detector(model_cfg))
    pixels = cfg.canvas**2
    scenes = cfg.train_scenes + cfg.val_scenes + cfg.test_scenes
    share = math.ceil(cfg.batch_size / processes)
    feature_maps = 18 * cfg.width * pixels * (2 * share + 64)  # 64: a test batch
    fixed_boxes = 9 * pixels / 16 if cfg.detector == "two-stage" else 0
    if cfg.detector == "sliding":
        fixed_boxes = 8 * pixels / 9 * (1 + 256 / 4)  # and each window's 16x16 crop
    n_bytes = 4 * (4 * n_params + scenes * pixels + feature_maps + 8 * fixed_boxes)
    flags = f"--width {cfg.width} --canvas {cfg.canvas} --batch-size {cfg.batch_size}"
    check_fits_in_memory(n_bytes, f"{flags} --train-scenes {cfg.train_scenes}", device)


def load_data(cfg: TrainConfig):
    """(train, validation, test scenes): generated, or your annotated images split 80/20 by
    seed (the held-out fifth is then both the validation and the test set)."""
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
        validation = make_scenes(cfg.val_scenes, "test", **{**options, "seed": cfg.seed + 1})
        return (
            make_scenes(cfg.train_scenes, "train", **options),
            validation,
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
    return train, test, test


def check_batches_split(n_train: int, batch_size: int, dist: Distributed) -> None:
    """Every global batch of an epoch, the last and smaller one too, gives each process as many
    scenes (checked now, not when the last batch comes)."""
    steps = math.ceil(n_train / batch_size)
    for size in (min(batch_size, n_train), n_train - (steps - 1) * batch_size):
        if size % dist.world_size:
            raise UserError(
                f"a global batch of {size} scenes (--batch-size {batch_size}, {n_train} training "
                f"scenes) does not split over {dist.world_size} processes: make both multiples "
                f"of {dist.world_size}"
            )


def scene_generators(batch: torch.Tensor, batch_rng: torch.Generator, dist: Distributed):
    """This process's share of a global batch of scene indices, and one generator per scene
    for the draws made for it (sampled anchors, regions, windows). Every process draws the
    seeds of the whole batch from the same generator and keeps its share, so a scene's draws
    do not depend on the process that trains on it: N processes equal one."""
    seeds = torch.randint(2**62, (len(batch),), generator=batch_rng)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in dist.shard(seeds)]
    return dist.shard(batch), generators


def train_step(model, images, targets, generators, optimizer, amp, dist) -> dict:
    """One AdamW step on this process's share of the global batch; its loss terms."""
    with amp.autocast():  # the models compute their losses in float32
        # Each loss summed over samples is divided by the count of samples averaged over the
        # processes, not by this process's own count, so that DDP's average of the gradients is
        # the gradient of the global batch's loss (model.own_count has the derivation).
        _, losses = model(images, targets, generators, mean_count=dist.all_reduce_mean)
    optimizer.zero_grad()
    amp.backward(sum(losses.values()))  # RPN + head, or YOLO's four terms
    amp.step(optimizer)
    return losses


def targets_of(scenes, index, device):
    return [
        {
            "boxes": torch.from_numpy(scenes.boxes[i]).to(device),
            "labels": torch.from_numpy(scenes.labels[i]).to(device),
        }
        for i in index
    ]


def evaluate(model, scenes, cfg: TrainConfig, device, amp) -> dict:
    """Detect on every held-out scene; mAP@0.5, COCO mAP and images per second."""
    model.eval()
    images = torch.from_numpy(scenes.images).to(device)
    predictions = []
    started = time.perf_counter()
    for batch in images.split(64):
        with amp.autocast():
            results = model.detect(batch, score_threshold=cfg.score_threshold)
        predictions += [tuple(t.cpu() for t in result) for result in results]
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


def learning_rate(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine decay from --lr to 0."""
    warmup = max(1, total_steps // 20)
    cosine = 0.5 * (1 + math.cos(math.pi * step / total_steps))
    return cfg.lr * min(1.0, (step + 1) / warmup) * cosine


def finish(run, model, test, cfg: TrainConfig, device, amp) -> dict:
    """The test numbers and figures, and metrics.json (on the first process only)."""
    result = evaluate(model, test, cfg, device, amp)
    report.write_figures(run.path, test, result, cfg.detector)
    voc = result["voc"]
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


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    dist = init_distributed(cfg.device)  # one process, or this one's place in a torchrun job
    device = dist.device
    ckpt = load_for_resume(cfg, PROJECT, CHECKPOINT, must_match=MUST_MATCH)
    seed_everything(cfg.seed)  # alike on every process: the same initial weights
    set_threads(cfg.threads)
    amp = mixed_precision(cfg.precision, device)

    check_memory(cfg, device, dist.world_size)
    train, validation, test = load_data(cfg)
    check_batches_split(len(train), cfg.batch_size, dist)
    model_cfg = DetectorConfig(
        detector=cfg.detector,
        n_classes=len(train.classes),
        image_size=cfg.canvas,
        width=cfg.width,
        roi_op=cfg.roi_op,
    )
    run = start_run(f"detection ({cfg.detector})", cfg, PROJECT, is_main=dist.is_main)
    # Batch norm's statistics are those of the global batch, pooled over the processes.
    model = dist.sync_batch_norm(build_detector(model_cfg).to(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The shuffle of every epoch and a seed per scene of every batch: alike on every process.
    batch_rng = torch.Generator().manual_seed(cfg.seed)
    scaler = {"scaler": amp.scaler} if amp.scaler else {}  # fp16 only
    parts = dict(model=model, optimizer=optimizer, batch_rng=batch_rng, **scaler)
    state = TrainingState(run.path / CHECKPOINT, cfg, dist=dist, **parts)
    start = state.restore(ckpt)
    ddp = dist.wrap(model)  # DDP under torchrun: rank 0's weights, gradients averaged
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    inference_needs = dict(config=asdict(model_cfg), classes=list(train.classes))

    images = torch.from_numpy(train.images).to(device)
    step = start
    for epoch in range(start // steps_per_epoch, cfg.epochs):
        ddp.train()
        batches = torch.randperm(len(train), generator=batch_rng).split(cfg.batch_size)
        for batch in progress(batches, desc=f"epoch {epoch + 1}", disable=not dist.is_main):
            index, generators = scene_generators(batch, batch_rng, dist)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, cfg)
            targets = targets_of(train, index.tolist(), device)
            losses = train_step(ddp, images[index], targets, generators, optimizer, amp, dist)
            step += 1
            if step % cfg.log_every == 0:  # the global batch's losses: means over processes
                losses = {name: dist.all_reduce_mean(v.item()) for name, v in losses.items()}
                run.log(step=step, epoch=epoch + 1, loss=sum(losses.values()), **losses)
        if dist.is_main:  # no collective in here: the others wait in state.save
            val_map50 = evaluate(model, validation, cfg, device, amp)["voc"]["map"]
            run.log(step=step, epoch=epoch + 1, val_map50=val_map50)
        state.save(step, **inference_needs)  # on every process; the first one writes

    metrics = finish(run, model, test, cfg, device, amp) if dist.is_main else {}
    dist.close()
    return metrics


if __name__ == "__main__":
    cli_main(main, TrainConfig)
