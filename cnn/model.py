"""The classic convolutional networks, hand-built from Conv2d / Linear / BatchNorm2d primitives.

LeNet-5 (1998) -> AlexNet (2012) -> ResNet-18 (2015), and a plain MLP baseline that sees the
same pixels without convolution. Module names follow torchvision's, so that the tests can copy
torchvision's weights into ours and demand the same outputs.

Shapes: N batch, C channels, H = W image side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = ("lenet5", "lenet5-modern", "alexnet", "resnet18", "mlp")


@dataclass
class ModelConfig:
    name: str = "lenet5"  # one of MODELS
    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 32
    width: float = 1.0  # channel multiplier for alexnet and resnet18 (1.0 = the paper's)
    dropout: float = 0.5  # alexnet's classifier
    cifar_stem: bool = True  # resnet18: 3x3 stride-1 stem, no max pool (for 32x32 images)
    hidden: int = 256  # mlp


# ----------------------------------------------------------------------------- LeNet-5


class LeNet5(nn.Module):
    """LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
    recognition": C1-S2-C3-S4-C5-F6-output on 32x32 images.

    Simplified, as almost every reimplementation does: C3 connects to all six S2 maps (the
    paper's sparse connection table saved compute in 1998), S2/S4 are plain average pools
    (the paper's had a trainable gain and bias), the squashing is tanh (the paper's was
    1.7159 tanh(2x/3)), and the output layer is linear with softmax instead of RBF units.
    `modern=True` swaps in what came later: ReLU, max pooling, batch norm.
    """

    def __init__(self, cfg: ModelConfig, modern: bool = False):
        super().__init__()
        if cfg.image_size != 32:
            raise ValueError(f"LeNet-5 takes 32x32 images, got {cfg.image_size}")
        pool = nn.MaxPool2d if modern else nn.AvgPool2d
        act = nn.ReLU if modern else nn.Tanh
        norm = nn.BatchNorm2d if modern else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 6, 5), norm(6), act(),  # C1: (N, 6, 28, 28)
            pool(2),  # S2: (N, 6, 14, 14)
            nn.Conv2d(6, 16, 5), norm(16), act(),  # C3: (N, 16, 10, 10)
            pool(2),  # S4: (N, 16, 5, 5)
            nn.Conv2d(16, 120, 5), act(),  # C5: (N, 120, 1, 1), a conv that sees all of S4
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 120)
            nn.Linear(120, 84), act(),  # F6
            nn.Linear(84, cfg.num_classes),  # output
        )  # fmt: skip

    def forward(self, x):  # x: (N, C, 32, 32) -> logits (N, num_classes)
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """Krizhevsky, Sutskever, Hinton 2012: five convolutions, three fully connected layers,
    ReLU, overlapping max pools and dropout.

    The layout is torchvision's single-GPU variant (Krizhevsky 2014, "One weird trick"): 64
    first-layer filters, no local response normalisation, no two-GPU split. An adaptive
    average pool to 6x6 lets any input of side >= 63 through; `width` scales every layer.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.image_size < 63:
            raise ValueError(f"AlexNet needs images of side >= 63, got {cfg.image_size}")
        c1, c2, c3, c4, c5 = (max(1, round(c * cfg.width)) for c in (64, 192, 384, 256, 256))
        fc = max(1, round(4096 * cfg.width))
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c1, 11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),  # overlapping pools: window 3, stride 2
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),  # (N, c5, 6, 6) for 224x224 input
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(c5 * 6 * 6, fc), nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(fc, fc), nn.ReLU(inplace=True),
            nn.Linear(fc, cfg.num_classes),
        )  # fmt: skip

    def forward(self, x):  # x: (N, C, H, W)
        x = self.avgpool(self.features(x))  # (N, c5, 6, 6)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


# ----------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    """He, Zhang, Ren, Sun 2015: y = relu(F(x) + shortcut(x)), F = conv-bn-relu-conv-bn.

    The shortcut is the identity, or, where the block halves the resolution or changes the
    width, a 1x1 convolution with stride 2 and batch norm (the paper's option B).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):  # x: (N, c_in, H, W) -> (N, c_out, H / stride, W / stride)
        residual = F.relu(self.bn1(self.conv1(x)))
        residual = self.bn2(self.conv2(residual))  # F(x)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(residual + shortcut)  # the block learns only the residual F(x) = H(x) - x


class ResNet18(nn.Module):
    """Stem, four stages of two BasicBlocks (64, 128, 256, 512 channels; each stage after the
    first halves the resolution), global average pool, one linear layer: 18 weight layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = [max(1, round(c * cfg.width)) for c in (64, 128, 256, 512)]
        if cfg.cifar_stem:  # small images: keep the resolution, 32x32 -> 32x32
            self.conv1 = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:  # ImageNet stem: 224x224 -> 56x56
            self.conv1 = nn.Conv2d(cfg.in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out))
            setattr(self, f"layer{i + 1}", stage)
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], cfg.num_classes)

    def forward(self, x):  # x: (N, C, H, W)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)  # (N, 64 -> 512, H -> H / 8 (or / 32 with the ImageNet stem))
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


# ----------------------------------------------------------------------------- baseline


class MLP(nn.Module):
    """Every pixel to every hidden unit: no weight sharing, no notion of neighbourhood."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n_in = cfg.in_channels * cfg.image_size * cfg.image_size
        self.net = nn.Sequential(
            nn.Flatten(),  # (N, C*H*W)
            nn.Linear(n_in, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name == "lenet5":
        return LeNet5(cfg)
    if cfg.name == "lenet5-modern":
        return LeNet5(cfg, modern=True)
    if cfg.name == "alexnet":
        return AlexNet(cfg)
    if cfg.name == "resnet18":
        return ResNet18(cfg)
    if cfg.name == "mlp":
        return MLP(cfg)
    raise ValueError(f"unknown model {cfg.name!r} (choose from {', '.join(MODELS)})")


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch: int = 512):
    """Logits (N, num_classes) as a NumPy array for standardised images x (N, C, H, W), in
    evaluation mode (running batch-norm statistics, no dropout), batch by batch."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model(torch.from_numpy(x[i : i + batch]).to(device)) for i in range(0, len(x), batch)]
    return torch.cat(parts).cpu().numpy()


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first convolution, whose filters the run draws; None for the MLP."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
