"""Time of concept discovery on the benchmark's ResNet-18 (W2's network) and where it goes.

    cd bench && python discover_resnet.py [--images 40] [--segments 15,50,80] [--out DIR]

The issue's scale: 40 target images at 224x224 segmented at 3 resolutions (SLIC 15, 50 and
80 segments), patches through a ResNet-18 (torchvision's layout, random weights: the
concepts mean nothing, the time is what is measured) at ``layer3`` and ``layer4``, 25
k-means clusters per layer, the kept clusters tested against 10 random sets of 20 images
with 10 runs. Prints the seconds of each phase as JSON, cold (empty cache) and warm (the
same file again: segmentations and patch activations from the cache).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from reporting import emit, machine
from workloads import ResNet18

from tcavkit.demo.synthetic import make_dataset
from tcavkit.discover import discover

EXPERIMENT = """\
model:
  factory: "workloads:ResNet18"  # bench/workloads.py, found on the working directory
  factory_args: {{num_classes: 3}}
  weights: resnet18.pt
  layers: [layer3, layer4]
  labels: [fire, water, grass]
  input: {{size: [224, 224]}}
data: data
targets: [fire]
random: {{sets: "random500_*", runs: 10}}
cav: {{method: mean-difference}}
discover:
  targets: [fire]
  images: {images}
  segments: [{segments}]
  compactness: 20
  clusters: 25
  min_images: 5
  max_patches: 40
seed: 0
cache: cache
output: results
"""


def prepare(out: Path, images: int, segments: str) -> Path:
    """Write the data, the ResNet-18's weights and the experiment file under ``out``; the
    file's path."""
    make_dataset(out / "data", size=(224, 224), n_per_set=max(20, images), n_random_sets=10)
    torch.manual_seed(0)
    torch.save(ResNet18(3).state_dict(), out / "resnet18.pt")
    path = out / "experiment.yaml"
    path.write_text(EXPERIMENT.format(images=images, segments=segments.replace(",", ", ")))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--segments", default="15,50,80")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tcavkit-discover-resnet-"))
    prepare(out, args.images, args.segments)
    report: dict = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
    }
    for name in ("cold", "warm"):
        started = time.perf_counter()
        found = discover(out / "experiment.yaml", out=out / name, progress=False)
        report[name] = {
            "total_s": round(time.perf_counter() - started, 2),
            "discover_s": round(found.seconds, 2),
            "concepts": len(found.concepts),
            "phases_s": {k: round(v, 2) for k, v in found.result.meta["timings"].items()},
        }
        print(json.dumps({name: report[name]}), flush=True)
    emit(report)


if __name__ == "__main__":
    main()
