"""Activation and gradient pools of the starter CNN, for the statistics studies.

Every image of every kind passes through the model once; an experiment on a sample of
images is then an index selection into these pools (no forward pass), which is what makes
hundreds of simulated experiments affordable.

    python bench/stats_pools.py [--size 32] [--per-kind 400] [--random 4000]

Writes ``bench/.data/stats-pools-<size>-<digest>.npz`` (reused when it exists; the digest is of
the image generator's and the starter CNN's sources, so either changing builds new pools).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch

from tcavkit.demo import starters, synthetic
from tcavkit.demo.starters import CLASSES, train_starter_cnn
from tcavkit.demo.synthetic import COLOURS, TEXTURES, make_images, set_rng
from tcavkit.examples.images import preprocess
from tcavkit.models import TorchModel
from tcavkit.options import Preprocessing

LAYERS = ("block2", "block3")
DATA = Path(__file__).resolve().parent / ".data"


def pools_path(size: int, seed: int = 0) -> Path:
    """The pools' file, named by the image size and the generator and CNN sources, so that a
    change to either builds fresh pools instead of reusing stale ones."""
    digest = hashlib.sha256()
    for module in (synthetic, starters):
        digest.update(Path(module.__file__).read_bytes())  # type: ignore[arg-type]
    seeded = f"-seed{seed}" if seed else ""
    return DATA / f"stats-pools-{size}{seeded}-{digest.hexdigest()[:12]}.npz"


def build(size: int, per_kind: int, n_random: int, seed: int = 0) -> Path:
    """Train the starter CNN and store every kind's activations (and the targets'
    gradients) at :data:`LAYERS`."""
    torch.manual_seed(seed)
    trained = train_starter_cnn(size=(size, size), seed=seed)
    print(f"starter CNN: test accuracy {trained.test_accuracy:.3f}", flush=True)
    adapter = TorchModel(trained.model, device="cpu")
    prep = Preprocessing(size=(size, size))
    kinds = {
        "random": n_random,
        **{c: per_kind for c in COLOURS},
        **{t: per_kind for t in TEXTURES},
        **{c: per_kind for c in CLASSES},
    }
    arrays: dict[str, np.ndarray] = {}
    for kind, n in kinds.items():
        images = make_images(kind, n, (size, size), set_rng(seed + 1, f"pool-{kind}"))
        x = preprocess(images, prep)
        parts: dict[str, list[np.ndarray]] = {layer: [] for layer in LAYERS}
        for start in range(0, n, 256):
            out = adapter.activations(x[start : start + 256], LAYERS)
            for layer in LAYERS:
                parts[layer].append(out[layer].numpy())
        for layer in LAYERS:
            arrays[f"act/{kind}/{layer}"] = np.concatenate(parts[layer])
        if kind in CLASSES:
            for k, target in enumerate(CLASSES):
                grads: dict[str, list[np.ndarray]] = {layer: [] for layer in LAYERS}
                for start in range(0, n, 256):
                    out = adapter.gradients(x[start : start + 256], k, LAYERS)
                    for layer in LAYERS:
                        grads[layer].append(out[layer].numpy())
                for layer in LAYERS:
                    arrays[f"grad/{kind}/{target}/{layer}"] = np.concatenate(grads[layer])
        print(f"  {kind}: {n} images", flush=True)
    path = pools_path(size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def load(
    size: int = 32, per_kind: int = 400, n_random: int = 4000, seed: int = 0
) -> dict[str, np.ndarray]:
    """The pools of the CNN trained from ``seed`` (built on first use)."""
    path = pools_path(size, seed)
    if not path.exists():
        build(size, per_kind, n_random, seed)
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--per-kind", type=int, default=400)
    parser.add_argument("--random", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0, help="the CNN's and the images' seed")
    args = parser.parse_args()
    print(build(args.size, args.per_kind, args.random, args.seed))
