"""GPU checks of the device code path (run by hand on a machine with CUDA; not in CI).

1. The same experiment on ``cuda`` and on ``cpu`` gives the same scores for every learner.
2. torchvision and timm networks through ``model.factory`` (where those packages import):
   nested layer names, one experiment each.

Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tcavkit import CavOptions, Experiment
from tcavkit.config import ModelSpec
from tcavkit.demo.starters import starter_cnn
from tcavkit.models.loading import load_model

FAILED: list[str] = []
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of the script


def check(name: str, fn) -> None:
    began = time.perf_counter()
    try:
        detail = fn()
        print(f"PASS {name} ({time.perf_counter() - began:.1f} s) {detail or ''}", flush=True)
    except Exception:
        FAILED.append(name)
        print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)


def tensors(n_sets: int, n: int, size: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {f"set{i}": torch.rand(n, 3, size, size, generator=generator) for i in range(n_sets)}


def cuda_matches_cpu(method: str) -> str:
    torch.manual_seed(0)
    model = starter_cnn(3, width=8).eval()
    data = tensors(14, 20, 32, 1)
    concepts = {"c0": data.pop("set0"), "c1": data.pop("set1")}
    targets = {"0": data.pop("set2"), "1": data.pop("set3")}
    random = {f"random500_{i}": x for i, x in enumerate(data.values())}
    results = {}
    for device in (DEVICE, "cpu"):
        experiment = Experiment(
            model,
            ["block2", "block3"],
            targets,
            concepts,
            random,
            runs=10,
            min_examples=5,
            cav=CavOptions(method=method),
            device=device,
            cache_dir=None,
            progress=False,
        )
        results[device] = experiment.run().runs
    a, b = results[DEVICE], results["cpu"]
    same_score = float((a.tcav_score == b.tcav_score).mean())
    worst = float(np.abs(a.magnitude - b.magnitude).max())
    assert same_score > 0.99, f"only {same_score:.3f} of the scores agree"
    assert worst < 1e-3, f"magnitudes differ by {worst}"
    return f"scores equal: {same_score:.3f}, largest magnitude difference {worst:.2e}"


def zoo(factory: str, args: dict, layers: list[str]) -> str:
    spec = ModelSpec(factory=factory, factory_args=args, layers=layers)
    adapter = load_model(spec, device=DEVICE)
    data = tensors(8, 10, 64, 2)
    targets = {"0": data.pop("set0")}
    concepts = {"c": data.pop("set1")}
    random = {f"random500_{i}": x for i, x in enumerate(data.values())}
    experiment = Experiment(
        adapter,
        layers,
        targets,
        concepts,
        random,
        runs=5,
        min_examples=5,
        cav=CavOptions(method="mean-difference"),
        cache_dir=None,
        progress=False,
    )
    runs = experiment.run().runs
    return f"{len(runs)} rows at {layers}"


def main() -> None:
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "no GPU: dry run on the CPU"
    print(name, torch.__version__, flush=True)
    for method in ("mean-difference", "sgd", "logistic"):
        check(f"{DEVICE} == cpu ({method})", lambda m=method: cuda_matches_cpu(m))
    check(
        "torchvision resnet18 via factory",
        lambda: zoo(
            "torchvision.models:resnet18",
            {"weights": None, "num_classes": 3},
            ["layer3.1.conv2", "layer4"],
        ),
    )
    check(
        "timm resnet18 via factory",
        lambda: zoo(
            "timm:create_model",
            {"model_name": "resnet18", "pretrained": False, "num_classes": 3},
            ["layer3.1.conv2", "layer4"],
        ),
    )
    check(
        "timm vit_tiny via factory",
        lambda: zoo(
            "timm:create_model",
            {
                "model_name": "vit_tiny_patch16_224",
                "pretrained": False,
                "num_classes": 3,
                "img_size": 64,
            },
            ["blocks.5", "blocks.11"],
        ),
    )
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
