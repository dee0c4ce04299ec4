"""Planted ground truth: a CNN that can only use colour, and null concepts that mean nothing.

A small CNN is trained in the test on generated "starter creatures" whose class is decided
by body colour alone (fire = red, water = blue, grass = green); textures are drawn
independently of the class. TCAV must mark each class's colour significant for it, and not
mark any texture, with the default test and the default number of random runs (20).
"""

from __future__ import annotations

import pytest

from tcavkit import CavOptions, Experiment, ImageFolder, Preprocessing, TensorSource
from tcavkit.demo.starters import train_starter_cnn
from tcavkit.demo.synthetic import make_dataset

SIZE = (32, 32)


@pytest.fixture(scope="module")
def trained():
    result = train_starter_cnn(size=SIZE, n_per_class=60, epochs=6, seed=0)
    assert result.test_accuracy > 0.9
    return result.model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("starters")
    return make_dataset(
        root,
        size=SIZE,
        n_per_set=20,
        n_random_sets=20,
        concepts=("red", "green", "blue", "striped", "dotted", "zigzag"),
        seed=0,
    )


@pytest.mark.slow
def test_colour_is_significant_and_texture_is_not(trained, dataset, tmp_path):
    folders = {name: ImageFolder(path) for name, path in dataset.items()}
    targets = {name: folders[name] for name in ("fire", "water", "grass")}
    concepts = {n: folders[n] for n in ("red", "green", "blue", "striped", "dotted", "zigzag")}
    random = {name: folders[name] for name in folders if name.startswith("random500_")}
    result = Experiment(
        trained,
        layers=["block2", "block3"],
        targets=targets,
        concepts=concepts,
        random=random,
        labels=["fire", "water", "grass"],
        preprocessing=Preprocessing(size=SIZE),
        cav=CavOptions(method="mean-difference"),
        min_examples=10,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        device="cpu",
    ).run()
    summary = result.summary.set_index(["target", "concept", "layer"])
    for target, colour in (("fire", "red"), ("water", "blue"), ("grass", "green")):
        row = summary.loc[(target, colour, "block3")]
        assert row.significant, summary.loc[target]
        assert row["mean"] > row.null_mean
    textures = result.summary[result.summary.concept.isin(["striped", "dotted", "zigzag"])]
    assert not textures.significant.any(), textures


def _tensor_sets(kind: str, names: list[str], n: int, seed: int) -> dict[str, TensorSource]:
    """In-memory image sets drawn with the library's generators, one generator per name."""
    from tcavkit.demo.synthetic import make_images, set_rng
    from tcavkit.examples.images import preprocess

    prep = Preprocessing(size=SIZE)
    return {
        name: TensorSource(preprocess(make_images(kind, n, SIZE, set_rng(seed, name)), prep))
        for name in names
    }


def null_concept_experiment(model, seed: int, test: str = "concept-t"):
    """60 "concepts" that are just more random sets, against 20 random sets."""
    concepts = _tensor_sets("random", [f"null{i}" for i in range(60)], 20, seed)
    random = _tensor_sets("random", [f"random500_{i}" for i in range(20)], 20, seed)
    targets = _tensor_sets("fire", ["fire"], 20, seed)
    targets.update(_tensor_sets("water", ["water"], 20, seed))
    from tcavkit import StatsOptions

    return Experiment(
        model,
        layers=["block2", "block3"],
        targets=targets,
        concepts=concepts,
        random=random,
        labels=["fire", "water", "grass"],
        cav=CavOptions(method="mean-difference"),
        stats=StatsOptions(test=test, correction="holm"),
        seed=seed,
        cache_dir=None,
        progress=False,
        device="cpu",
    ).run()


@pytest.mark.slow
def test_null_concepts_are_flagged_at_most_at_alpha(trained):
    """Calibration: concepts drawn exactly like the random sets.

    8 seeds x 60 null concepts x 2 targets x 2 layers = 1920 tests. Within one (target,
    layer) every concept is compared with the same 20 pseudo-concepts, so the flags of one
    seed move together (per-seed rates from 1% to 12% were seen while developing); the
    pooled rate over 8 seeds has a standard error of about 0.014 around its true value.
    The bound alpha + 0.025 is under two standard errors; the tight check of the test's
    level, on 1000 independent null concepts, is in test_stats.py.
    """
    from tcavkit.stats import summarize

    flagged = classic_flagged = after_holm = total = 0
    for seed in range(8):
        result = null_concept_experiment(trained, seed)
        summary = result.summary
        total += len(summary)
        flagged += int((summary.p_value <= 0.05).sum())
        after_holm += int(summary.significant.sum())
        classic = summarize(result.runs, test="ttest", correction="none")
        classic_flagged += int((classic.p_value <= 0.05).sum())
    assert flagged / total <= 0.05 + 0.025
    # Essentially none after Holm: at most 0.5% of rows (3 of 1920 were seen; Holm keeps the
    # family-wise rate per seed, and a seed whose null sample is narrow can lose a few).
    assert after_holm / total <= 0.005
    # tensorflow/tcav's per-run t-test on the same runs: far above alpha.
    assert classic_flagged / total >= 0.25
