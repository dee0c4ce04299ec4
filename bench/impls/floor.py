"""The floor: the model's own passes and nothing else (the lower bound of any TCAV run).

One batched forward pass over every unique example (targets, concepts, random sets) that
captures every requested layer and copies it to the CPU, plus one batched backward pass
over the target examples giving the class-logit gradient at every layer. Images are read
and decoded as every implementation must.
"""

from __future__ import annotations

import numpy as np
import torch
from common import Measure, parse_args, warm_up, write_result
from PIL import Image
from workloads import load_model, read_spec


def load_images(folder, size: int) -> torch.Tensor:
    """Every image of a set folder as ``(n, 3, size, size)`` float32 in [0, 1]."""
    arrays = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                arrays.append(np.asarray(img))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)


def main() -> None:
    args = parse_args([("--batch-size", {"type": int, "default": 64})])
    spec = read_spec(args.workload)
    device = torch.device(args.device)
    model = load_model(args.workload).to(device)
    warm_up(args.device)
    modules = dict(model.named_modules())
    layers = spec["layers"]
    captured: dict[str, torch.Tensor] = {}
    for name in layers:
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out)
        )
    measure = Measure()
    measure.start()
    data = args.workload / "data"
    n_values = 0
    with torch.inference_mode():
        for name in [*spec["targets"], *spec["concepts"], *spec["random"]]:
            x = load_images(data / name, spec["image_size"])
            for start in range(0, len(x), args.batch_size):
                model(x[start : start + args.batch_size].to(device))
                for layer in layers:
                    n_values += captured[layer].flatten(1).cpu().numel()
    for target in spec["targets"]:
        index = spec["labels"].index(target)
        x = load_images(data / target, spec["image_size"])
        for start in range(0, len(x), args.batch_size):
            logits = model(x[start : start + args.batch_size].to(device))
            grads = torch.autograd.grad(logits[:, index].sum(), [captured[k] for k in layers])
            n_values += sum(g.flatten(1).cpu().numel() for g in grads)
    measure.stop()
    write_result(
        args.out,
        impl="floor",
        workload=spec,
        measure=measure,
        scores=[],
        settings={"batch_size": args.batch_size, "device": args.device},
        notes=f"{n_values} activation and gradient values copied to the CPU",
    )


if __name__ == "__main__":
    main()
