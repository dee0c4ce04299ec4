"""Benchmark workloads: the same model, images and experiment shape for every implementation.

A prepared workload is a folder::

    <root>/<name>/
        workload.json      # the spec below, as JSON (what every implementation reads)
        model.pt           # state_dict of the model (``build_model(spec["model"])``)
        model.npz          # the same weights as NumPy arrays (for peers without PyTorch)
        data/<set>/img_NNNN.jpg

``workload.json`` holds: ``name``, ``model`` (builder name), ``image_size``, ``layers``,
``labels`` (class names in output order), ``targets``, ``concepts``, ``random`` (set
names), ``runs`` and ``n_per_set``. Implementations must use exactly these sets and layers.

Workloads (``scale`` multiplies the images per set, default 50):

- ``W1``: the classic walkthrough shape: a 3-block CNN (the starter CNN, width 16,
  trained for a few epochs on generated creatures) at 128x128; 3 targets, 6 concepts,
  20 random sets, layers ``block2``/``block3``, 20 runs.
- ``W2``: a ResNet-18-shaped network (random weights) at 224x224; 1 target, 10 concepts,
  20 random sets, layers ``layer3``/``layer4``, 20 runs.
- ``W3``: W1's model with 100 concepts, 50 random sets and 50 runs.
- ``W3-c6-r20``, ``W3-c100-r20``: W3 variants used to measure the cost per extra concept and
  per extra random run (W1's model and sets; concepts x runs as named).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tcavkit.demo.starters import CLASSES, starter_cnn, train_starter_cnn
from tcavkit.demo.synthetic import (
    DEFAULT_CONCEPTS,
    make_images,
    set_rng,
    write_image_set,
)


@dataclass(frozen=True)
class Workload:
    """One experiment shape (see the module docstring)."""

    name: str
    model: str
    image_size: int
    layers: list[str]
    labels: list[str]
    targets: list[str]
    n_concepts: int
    n_random: int
    runs: int
    n_per_set: int = 50
    concept_kinds: list[str] = field(default_factory=lambda: list(DEFAULT_CONCEPTS))

    def concept_names(self) -> list[str]:
        """Concept set names: the kind itself while kinds last, then ``<kind>_<k>``."""
        kinds = self.concept_kinds
        return [
            kinds[i % len(kinds)]
            if i < len(kinds)
            else f"{kinds[i % len(kinds)]}_{i // len(kinds)}"
            for i in range(self.n_concepts)
        ]

    def random_names(self) -> list[str]:
        return [f"random500_{i}" for i in range(self.n_random)]

    def spec(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "image_size": self.image_size,
            "layers": self.layers,
            "labels": self.labels,
            "targets": self.targets,
            "concepts": self.concept_names(),
            "random": self.random_names(),
            "runs": self.runs,
            "n_per_set": self.n_per_set,
        }


_CNN = {"model": "w1_cnn", "image_size": 128, "layers": ["block2", "block3"]}
_CLASSES = list(CLASSES)
WORKLOADS: dict[str, Workload] = {
    "W1": Workload(
        "W1", **_CNN, labels=_CLASSES, targets=_CLASSES, n_concepts=6, n_random=20, runs=20
    ),
    "W2": Workload(
        "W2",
        "resnet18",
        224,
        ["layer3", "layer4"],
        labels=[f"class_{i}" for i in range(10)],
        targets=["class_0"],
        n_concepts=10,
        n_random=20,
        runs=20,
    ),
    "W3": Workload(
        "W3", **_CNN, labels=_CLASSES, targets=_CLASSES, n_concepts=100, n_random=50, runs=50
    ),
    "W3-c6-r20": Workload(
        "W3-c6-r20", **_CNN, labels=_CLASSES, targets=_CLASSES, n_concepts=6, n_random=50, runs=20
    ),
    "W3-c100-r20": Workload(
        "W3-c100-r20",
        **_CNN,
        labels=_CLASSES,
        targets=_CLASSES,
        n_concepts=100,
        n_random=50,
        runs=20,
    ),
}


# -- models --------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """ResNet basic block with torchvision's parameter names."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (torchvision's layout and names: ``layer1``..``layer4``, ``fc``)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (c_in, c_out, stride) in enumerate(widths, start=1):
            blocks = nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))
            self.add_module(f"layer{i}", blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_model(kind: str, n_classes: int) -> nn.Module:
    """The architecture named in ``workload.json`` (weights come from ``model.pt``)."""
    if kind == "w1_cnn":
        return starter_cnn(n_classes, width=16)
    if kind == "resnet18":
        return ResNet18(n_classes)
    raise ValueError(f"unknown model kind {kind!r}")


def load_model(folder: Path) -> nn.Module:
    """The workload's model with its weights, in eval mode, on the CPU."""
    spec = read_spec(folder)
    model = build_model(spec["model"], len(spec["labels"]))
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    return model.eval()


def read_spec(folder: Path) -> dict:
    return json.loads((Path(folder) / "workload.json").read_text())


# -- preparation ---------------------------------------------------------------------------
def _weights(work: Workload) -> dict[str, torch.Tensor]:
    if work.model == "w1_cnn":
        trained = train_starter_cnn(
            size=(work.image_size, work.image_size), n_per_class=60, epochs=4, width=16
        )
        print(f"  trained W1 CNN: test accuracy {trained.test_accuracy:.2f}", file=sys.stderr)
        return trained.model.state_dict()
    torch.manual_seed(0)
    model = ResNet18(len(work.labels)).eval()
    return model.state_dict()


def _kind(name: str) -> str:
    """The generator kind of a set: creatures for targets, else the concept's colour/texture."""
    if name in CLASSES:
        return name
    if name.startswith("class_"):
        return CLASSES[int(name.split("_")[1]) % len(CLASSES)]
    return "random" if name.startswith("random500_") else name.split("_")[0]


def prepare(name: str, root: Path, scale: float = 1.0) -> Path:
    """Write workload ``name`` under ``root`` (reused when already complete); its folder."""
    base = WORKLOADS[name]
    n = max(10, round(base.n_per_set * scale))
    work = Workload(**{**asdict(base), "n_per_set": n})
    folder = Path(root) / f"{name}-n{n}"
    spec = work.spec()
    done = folder / "workload.json"
    if done.exists() and json.loads(done.read_text()) == spec:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # Models and images are shared between workloads of the same model and size.
    shared = Path(root) / f"shared-{work.model}-{work.image_size}"
    shared.mkdir(parents=True, exist_ok=True)
    weights = shared / "model.pt"
    if not weights.exists():
        torch.save(_weights(work), weights)
    size = (work.image_size, work.image_size)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    for set_name in [*work.targets, *spec["concepts"], *spec["random"]]:
        source = shared / "sets" / f"{set_name}-n{n}"
        if not (source / ".complete").exists():
            images = make_images(_kind(set_name), n, size, set_rng(0, set_name))
            write_image_set(source, images, fmt="jpg")
            (source / ".complete").touch()
        link = data / set_name
        if not link.exists():
            link.symlink_to(source.resolve(), target_is_directory=True)
    arrays = shared / "model.npz"
    if not arrays.exists():
        state = torch.load(weights, weights_only=True)
        np.savez(arrays, **{k: v.numpy() for k, v in state.items()})
    for link, target in (("model.pt", weights), ("model.npz", arrays)):
        (folder / link).unlink(missing_ok=True)
        (folder / link).symlink_to(target.resolve())
    done.write_text(json.dumps(spec, indent=1))
    return folder
