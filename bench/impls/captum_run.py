"""captum's TCAV (``captum.concept.TCAV``) on a workload, set up as captum's TCAV tutorial does.

Peer implementation; runs in its own virtual environment (``bench/.venv-captum``, see
bench/README.md). Set up as in captum's ``TCAV_Image`` tutorial:

- one ``Concept`` per concept and random set, each with a data iterator over its folder
  (``CustomIterableDataset`` + ``dataset_to_dataloader``, batches of 64);
- experimental sets ``[[concept, random_k] for k in range(runs)]`` for every concept;
  ``--null tutorial`` adds the tutorial's significance sets ``[[random_0, random_k]]`` and
  ``--null all`` every pair of random sets (what tcavkit trains for its null distribution);
- ``TCAV(model, layers, save_path=...)`` with captum's defaults: ``DefaultClassifier``
  (scikit-learn ``SGDClassifier(alpha=0.01)`` on a 67/33 train/test split) and plain
  layer gradients (``LayerGradientXActivation(multiply_by_inputs=False)``);
- ``tcav.interpret(inputs=target_images, experimental_sets=..., target=class_index)`` once
  per target. CAVs trained for the first target are loaded from ``save_path`` for the
  others, as captum does.

The score kept is ``sign_count`` (the fraction of target examples whose class-logit
directional derivative along the CAV is positive) of the first concept of each
experimental set (the concept; the second entry is the random set's score, one minus it).

Timed: reading and decoding every image (targets and concept/random sets, through
captum's data iterators), activations, CAV training, attributions, scoring and the
aggregation into mean/std/n. Not timed: imports, loading the model, building the
``TCAV`` object. ``save_path`` is a fresh temporary folder per run (cold) unless
``--cache DIR`` is given (a second run with the same DIR is warm: CAVs load from disk).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import captum
import numpy as np
import torch
from captum.concept import TCAV, Concept
from captum.concept._utils.common import concepts_to_str
from captum.concept._utils.data_iterator import CustomIterableDataset, dataset_to_dataloader
from common import Measure, parse_args, write_result
from floor import load_images
from PIL import Image
from workloads import load_model, read_spec


def tensor_reader(size: int, device: torch.device):
    """The tutorial's ``get_tensor_from_filename``: one image as (3, size, size) in [0, 1]."""

    def read(filename: str) -> torch.Tensor:
        with Image.open(filename) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img)
        return torch.from_numpy(array).permute(2, 0, 1).float().div_(255).to(device)

    return read


def assemble_concept(name: str, concept_id: int, folder: Path, read) -> Concept:
    """The tutorial's ``assemble_concept``: a Concept whose iterator reads ``folder``."""
    dataset = CustomIterableDataset(read, str(folder) + "/")
    return Concept(id=concept_id, name=name, data_iter=dataset_to_dataloader(dataset))


def experimental_sets(concepts, randoms, runs: int, null: str) -> list[list[Concept]]:
    sets = [[concept, randoms[k]] for concept in concepts for k in range(runs)]
    if null == "tutorial":
        sets += [[randoms[0], randoms[k]] for k in range(1, runs)]
    elif null == "all":
        sets += [[randoms[i], randoms[j]] for i in range(runs) for j in range(i + 1, runs)]
    return sets


def main() -> None:
    args = parse_args(
        [
            ("--cache", {"default": None, "help": "captum save_path (default: fresh temp dir)"}),
            (
                "--null",
                {
                    "default": "none",
                    "choices": ["none", "tutorial", "all"],
                    "help": "random-vs-random sets: none, the tutorial's [random_0, random_k], "
                    "or every pair of random sets",
                },
            ),
            ("--seed", {"type": int, "default": 0}),
        ]
    )
    warnings.filterwarnings("ignore")  # DefaultClassifier's memory warning, deprecations
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    spec = read_spec(args.workload)
    device = torch.device(args.device)
    model = load_model(args.workload).to(device).eval()
    data = args.workload / "data"
    size = spec["image_size"]
    runs = min(spec["runs"], len(spec["random"]))
    save_path = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="captum-tcav-"))
    save_path.mkdir(parents=True, exist_ok=True)
    read = tensor_reader(size, device)
    names = [*spec["concepts"], *spec["random"][:runs]]
    concept_objs = {
        name: assemble_concept(name, i, data / name, read) for i, name in enumerate(names)
    }
    concepts = [concept_objs[name] for name in spec["concepts"]]
    randoms = [concept_objs[name] for name in spec["random"][:runs]]
    sets = experimental_sets(concepts, randoms, runs, args.null)
    tcav = TCAV(model=model, layers=list(spec["layers"]), save_path=str(save_path))

    measure = Measure()
    measure.start()
    per_key: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    timings: dict[str, float] = {}
    for target in spec["targets"]:
        started = time.perf_counter()
        x = load_images(data / target, size).to(device)
        scores = tcav.interpret(
            inputs=x, experimental_sets=sets, target=spec["labels"].index(target)
        )
        timings[f"interpret {target}"] = time.perf_counter() - started
        for exp_set in sets[: len(concepts) * runs]:
            key = concepts_to_str(exp_set)
            for layer in spec["layers"]:
                # sign_count is ordered as the experimental set: [concept, random]
                score = float(scores[key][layer]["sign_count"][0])
                per_key[(target, exp_set[0].name, layer)].append(score)
    table = [
        {
            "target": t,
            "concept": c,
            "layer": layer,
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "n": len(v),
        }
        for (t, c, layer), v in per_key.items()
    ]
    measure.stop()
    measure.phases = timings
    if not args.cache:
        shutil.rmtree(save_path, ignore_errors=True)
    write_result(
        args.out,
        impl="captum",
        workload=spec,
        measure=measure,
        scores=table,
        settings={
            "captum": captum.__version__,
            "torch": torch.__version__,
            "device": args.device,
            "classifier": "DefaultClassifier (sklearn SGDClassifier alpha=0.01, 33% test split)",
            "layer_attr_method": "LayerGradientXActivation(multiply_by_inputs=False)",
            "experimental_sets": len(sets),
            "null": args.null,
            "cache": args.cache is not None,
            "seed": args.seed,
        },
        notes=(
            "timed: image reading/decoding, activations, CAV training, attributions, scoring "
            "and aggregation for all targets; not timed: imports, model loading, TCAV() "
            "construction. save_path "
            + ("reused from --cache (warm if it was filled before)" if args.cache else "fresh")
            + ". std is the sample std (ddof=1) over the random runs."
        ),
    )


if __name__ == "__main__":
    main()
