"""tcavkit on a workload, through the public Python API (as a user would call it)."""

from __future__ import annotations

from common import Measure, parse_args, warm_up, write_result
from workloads import load_model, read_spec

from tcavkit import Experiment
from tcavkit.examples.sources import ImageFolder
from tcavkit.options import CavOptions, Preprocessing


def main() -> None:
    args = parse_args(
        [
            ("--method", {"default": "mean-difference"}),
            ("--cache", {"default": None, "help": "activation cache folder (None: no cache)"}),
            ("--cache-dtype", {"default": "float32"}),
            ("--batch-size", {"type": int, "default": 64}),
        ]
    )
    spec = read_spec(args.workload)
    model = load_model(args.workload).to(args.device)  # as the floor: not timed
    warm_up(args.device)
    data = args.workload / "data"
    measure = Measure()
    measure.start()
    size = spec["image_size"]
    experiment = Experiment(
        model,
        layers=spec["layers"],
        targets={name: ImageFolder(data / name) for name in spec["targets"]},
        concepts={name: ImageFolder(data / name) for name in spec["concepts"]},
        random={name: ImageFolder(data / name) for name in spec["random"]},
        labels=spec["labels"],
        runs=spec["runs"],
        max_examples=None,
        cav=CavOptions(method=args.method),
        preprocessing=Preprocessing(size=(size, size)),
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache,
        progress=False,
        **({"cache_dtype": args.cache_dtype} if args.cache_dtype != "float32" else {}),
    )
    result = experiment.run()
    measure.stop()
    measure.phases = {k: v for k, v in result.meta["timings"].items()}
    runs = result.runs[result.runs["kind"] == "concept"]
    table = runs.groupby(["target", "concept", "layer"], sort=False)["tcav_score"].agg(
        ["mean", "std", "count"]
    )
    scores = [
        {"target": t, "concept": c, "layer": lay, "mean": m, "std": s, "n": int(n)}
        for (t, c, lay), (m, s, n) in table.iterrows()
    ]
    summary = [
        {
            "target": row.target,
            "concept": row.concept,
            "layer": row.layer,
            "p_value": float(row.p_value),
            "significant": bool(row.significant),
        }
        for row in result.summary.itertuples()
    ]
    write_result(
        args.out,
        impl="tcavkit",
        workload=spec,
        measure=measure,
        scores=scores,
        settings={
            "method": args.method,
            "cache": args.cache is not None,
            "cache_dtype": args.cache_dtype,
            "batch_size": args.batch_size,
            "device": args.device,
            "counts": result.meta["counts"],
        },
        extra={"summary": summary},
    )


if __name__ == "__main__":
    main()
