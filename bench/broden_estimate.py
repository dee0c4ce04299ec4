"""How a Broden-scale study divides over N GPUs with ``executor: ray``: an estimate.

    python bench/broden_estimate.py [--concepts 1197] [--random 21] [--runs 20] ...

The counts are exact: the plan is tcavkit's own (:func:`tcavkit.pipeline.plan.plan_runs`),
the CAV batches those a run makes (:func:`tcavkit.pipeline.training.cav_chunks`, one Ray
task each), and the bytes follow from the layer widths. The times are a model whose rates
are arguments (defaults: a ResNet-50 at 224x224 in float32 on A100-class GPUs, a shared
file system of 5 GB/s in all and 1.25 GB/s per node), not a measurement:

- model passes: each set is one actor job; time = max(images / (N x images/s),
  bytes written / file-system bandwidth);
- CAVs: each batch is one task reading its sets from the shared cache (the Gram stage
  reads each group of positive sets once and the negatives once per positive group, then
  the directions and the projections read every set once more); time = max(compute / N,
  bytes read / bandwidth), with compute = Gram products at the given FLOP/s.
"""

from __future__ import annotations

import argparse
import math

from tcavkit.cav.batch import _groups
from tcavkit.pipeline.plan import plan_runs
from tcavkit.pipeline.training import cav_chunks

RESNET50 = {"layer3": 1024 * 14 * 14, "layer4": 2048 * 7 * 7}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=1197, help="Broden's visual concepts")
    parser.add_argument("--random", type=int, default=21, help="random sets")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--images", type=int, default=100, help="examples per set")
    parser.add_argument("--bytes", type=int, default=4, help="4: float32 cache, 2: float16")
    parser.add_argument("--images-per-s", type=float, default=1000.0, help="per GPU, forward")
    parser.add_argument("--tflops", type=float, default=15.0, help="per GPU, Gram products")
    parser.add_argument("--fs-gbs", type=float, default=5.0, help="shared FS, all nodes")
    parser.add_argument("--node-gbs", type=float, default=1.25, help="shared FS, per node")
    args = parser.parse_args()

    concepts = [f"c{i}" for i in range(args.concepts)]
    randoms = [f"random500_{i}" for i in range(args.random)]
    plan = plan_runs(concepts, randoms, [], args.runs, 0)
    n = args.images
    sizes = dict.fromkeys([*concepts, *randoms], n)
    width = sum(RESNET50.values())
    sets = args.concepts + args.random
    images = (sets + args.targets) * n
    cache = (sets + args.targets) * n * width * args.bytes
    print(f"sets: {sets} concepts and random sets + {args.targets} targets; {images} images")
    print(f"cache: {cache / 1e9:.0f} GB of activations and gradients ({args.bytes}-byte values)")
    total_cavs = batches = 0
    read = flops = 0.0
    for layer, dim in RESNET50.items():
        tasks, _ = plan.layer_tasks(layer)
        chunks = cav_chunks(len(tasks), dim)
        total_cavs += len(tasks)
        batches += len(chunks)
        for start, stop in chunks:
            batch = tasks[start:stop]
            positives = list(dict.fromkeys(t.positive for t in batch))
            for group in _groups(positives, sizes, 1024):
                negatives = list(dict.fromkeys(t.negative for t in batch if t.positive in group))
                rows_pos = len(group) * n
                rows_neg = len(negatives) * n
                read += (rows_pos + rows_neg) * dim * args.bytes
                flops += 2.0 * rows_pos * (rows_pos + rows_neg) * dim
            involved = {name for t in batch for name in (t.positive, t.negative)}
            read += 2 * len(involved) * n * dim * args.bytes
        print(f"{layer} (d={dim}): {len(tasks)} CAVs in {len(chunks)} batches (Ray tasks)")
    coefficients = total_cavs * 134 * 8  # ~134 training examples per CAV, float64
    print(f"CAVs: {total_cavs} in {batches} tasks; coefficients ~{coefficients / 1e6:.0f} MB")
    print(f"CAV stage reads {read / 1e9:.0f} GB from the cache, {flops / 1e15:.2f} PFLOP of Grams")
    print()
    print("GPUs | passes (min) | CAVs (min) | total (min)   [model: see the docstring]")
    for gpus in (1, 4, 16, 64):
        bandwidth = min(gpus * args.node_gbs, args.fs_gbs) * 1e9
        passes = max(images / (gpus * args.images_per_s), cache / bandwidth)
        per_task = flops / batches / (args.tflops * 1e12)
        cav_compute = math.ceil(batches / gpus) * per_task
        cavs = max(cav_compute, read / bandwidth)
        total = (passes + cavs) / 60
        print(f"{gpus:>4} | {passes / 60:>12.1f} | {cavs / 60:>10.1f} | {total:>11.1f}")


if __name__ == "__main__":
    main()
