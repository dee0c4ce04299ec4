"""The experiment engine end to end on models whose gradients are known in closed form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import axis_model
from tcavkit import CavOptions, Experiment
from tcavkit.errors import ConfigError, LayerError
from tcavkit.results import TcavResult
from tcavkit.tables import CORE_SUMMARY_COLUMNS, RUN_COLUMNS


def make(inputs, tmp_path, **kwargs):
    targets, concepts, random = inputs
    options = dict(
        layers=["1"],
        labels=["a", "b"],
        runs=10,
        min_examples=5,
        cav=CavOptions(method="mean-difference"),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        device="cpu",
    )
    options.update(kwargs)
    model = options.pop("model", None) or axis_model()
    return Experiment(model, targets=targets, concepts=concepts, random=random, **options)


def test_scores_and_magnitudes_match_closed_form(axis_experiment_inputs, tmp_path):
    result = make(axis_experiment_inputs, tmp_path).run()
    runs = result.runs
    assert tuple(runs.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    for (concept, negative, layer, _run), cav in result.cavs.items():
        for k, target in enumerate(["a", "b"]):
            row = runs[
                (runs.target == target)
                & (runs.concept == concept)
                & (runs.random == negative)
                & (runs.layer == layer)
                & ~runs.is_null
            ]
            if row.empty:
                continue
            # Every target gradient is e_k: the derivative along v is v_k for all examples.
            assert row.tcav_score.item() == float(cav.direction[k] > 0)
            assert row.magnitude.item() == pytest.approx(cav.direction[k], rel=1e-5)
    up_a = runs[(runs.target == "a") & (runs.concept == "up")]
    assert (up_a.tcav_score == 1.0).all()  # planted along e_0, the gradient of class a


def test_run_and_summary_tables_have_the_documented_shape(axis_experiment_inputs, tmp_path):
    result = make(axis_experiment_inputs, tmp_path, relative=[("up", "side")]).run()
    runs, summary = result.runs, result.summary
    n_random, n_runs = 12, 10
    per_target_layer = 3 * n_runs + n_random * n_runs  # concepts + relative + null
    assert len(runs) == 2 * per_target_layer
    assert runs.is_null.sum() == 2 * n_random * n_runs
    null = runs[runs.is_null]
    assert (null.concept != null.random).all()
    assert set(null.concept) == {f"random500_{i}" for i in range(12)}
    assert tuple(summary.columns[: len(CORE_SUMMARY_COLUMNS)]) == CORE_SUMMARY_COLUMNS
    assert set(zip(summary.target, summary.concept, strict=True)) == {
        (t, c) for t in "ab" for c in ("up", "side", "up vs side")
    }
    assert not summary[list(CORE_SUMMARY_COLUMNS)].isna().any().any()
    assert summary.significant.dtype == bool


def test_null_pairs_are_exact_mirror_images(axis_experiment_inputs, tmp_path):
    runs = make(axis_experiment_inputs, tmp_path).run().runs
    null = runs[runs.is_null].set_index(["target", "layer", "concept", "random"])
    for (target, layer, a, b), row in null.iterrows():
        if (target, layer, b, a) in null.index:
            mirror = null.loc[(target, layer, b, a)]
            assert row.tcav_score == pytest.approx(1 - mirror.tcav_score)
            assert row.magnitude == pytest.approx(-mirror.magnitude, abs=1e-6)


def test_same_seed_identical_runs_and_different_seed_different_cavs(
    axis_experiment_inputs, tmp_path
):
    first = make(axis_experiment_inputs, tmp_path, cav=CavOptions(method="sgd")).run()
    second = make(axis_experiment_inputs, tmp_path / "b", cav=CavOptions(method="sgd")).run()
    pd.testing.assert_frame_equal(first.runs, second.runs)
    other = make(axis_experiment_inputs, tmp_path, cav=CavOptions(method="sgd"), seed=1).run()
    key = ("up", "random500_0", "1", 0)
    assert not np.array_equal(first.cavs[key].direction, other.cavs[key].direction)


def test_save_and_load_round_trip(axis_experiment_inputs, tmp_path):
    result = make(axis_experiment_inputs, tmp_path).run()
    out = result.save(tmp_path / "out")
    for name in ("runs.csv", "summary.csv", "results.json"):
        assert (out / name).is_file()
    loaded = TcavResult.load(out)
    pd.testing.assert_frame_equal(
        loaded.summary[list(CORE_SUMMARY_COLUMNS)],
        result.summary[list(CORE_SUMMARY_COLUMNS)],
        check_dtype=False,
    )
    for key in ("config", "seed", "versions", "model", "sets", "timings"):
        assert key in loaded.meta
    assert loaded.meta["model"]["fingerprint"] == result.meta["model"]["fingerprint"]
    assert loaded.meta["sets"]["up"]["n_examples"] == 20


def test_second_run_does_no_forward_pass_and_weight_change_recomputes(
    axis_experiment_inputs, tmp_path
):
    model = axis_model()
    counter = model[0]
    make(axis_experiment_inputs, tmp_path, model=model).run()
    passes = counter.calls
    assert passes > 0
    second = make(axis_experiment_inputs, tmp_path, model=model).run()
    assert counter.calls == passes  # nothing went through the model
    assert second.counts.forward_batches == second.counts.backward_batches == 0
    import torch

    with torch.no_grad():
        model[2].weight[1, 3] = 0.25
    changed = make(axis_experiment_inputs, tmp_path, model=model).run()
    assert changed.counts.sets_from_cache == 0
    assert counter.calls > passes
    assert second.meta["counts"]["sets_from_cache"] == 2 + 2 + 12


def test_random_runs_warning_and_errors(axis_experiment_inputs, tmp_path):
    with pytest.warns(UserWarning, match="only 3 random runs"):
        make(axis_experiment_inputs, tmp_path, runs=3).run()
    with pytest.raises(LayerError, match="unknown layer 'conv1'"):
        make(axis_experiment_inputs, tmp_path, layers=["conv1"])
    with pytest.raises(ConfigError, match="target 'c'"):
        targets, concepts, random = axis_experiment_inputs
        make(({"c": targets["a"]}, concepts, random), tmp_path)
    with pytest.raises(ConfigError, match="at least 2"):
        targets, concepts, random = axis_experiment_inputs
        make((targets, concepts, {"r": random["random500_0"]}), tmp_path)


@pytest.mark.parametrize("method", ["mean-difference", "sgd"])
def test_warm_run_reads_cavs_from_the_cache_and_gives_identical_tables(
    axis_experiment_inputs, tmp_path, method
):
    cold = make(axis_experiment_inputs, tmp_path, cav=CavOptions(method=method)).run()
    assert cold.counts.cavs_trained > 0 and cold.counts.cavs_from_cache == 0
    warm = make(axis_experiment_inputs, tmp_path, cav=CavOptions(method=method)).run()
    assert warm.counts.cavs_trained == 0
    assert warm.counts.cavs_from_cache == cold.counts.cavs_trained
    pd.testing.assert_frame_equal(cold.runs, warm.runs)
    key = ("up", "random500_0", "1", 0)
    np.testing.assert_array_equal(cold.cavs[key].direction, warm.cavs[key].direction)
    # Another learner setting is another cache entry.
    other = make(axis_experiment_inputs, tmp_path, cav=CavOptions(method=method, alpha=0.1)).run()
    assert other.counts.cavs_trained == cold.counts.cavs_trained


def test_cavs_trained_in_several_batches_equal_one_batch(
    axis_experiment_inputs, tmp_path, monkeypatch
):
    # (The iterative learners batch exactly as well: tests/test_learners.py.)
    import tcavkit.pipeline.training as engine

    options = CavOptions(method="mean-difference")
    whole = make(axis_experiment_inputs, tmp_path / "a", cav=options).run()
    monkeypatch.setattr(engine, "CAV_BATCH_BYTES", 4 * 4 * 7)  # 7 CAVs of 4 floats per batch
    split = make(axis_experiment_inputs, tmp_path / "b", cav=options).run()
    pd.testing.assert_frame_equal(whole.runs, split.runs, atol=1e-6, check_exact=False)


def test_concept_cavs_are_the_cavs_of_the_run(axis_experiment_inputs, tmp_path):
    experiment = make(axis_experiment_inputs, tmp_path, cav=CavOptions(method="sgd"))
    result = experiment.run()
    cavs = experiment.concept_cavs("up", "1")
    assert len(cavs) == 10
    for run, cav in enumerate(cavs):
        stored = result.cavs[("up", f"random500_{run}", "1", run)]
        np.testing.assert_allclose(cav.direction, stored.direction, atol=1e-6)
        assert cav.accuracy == stored.accuracy


def test_float16_cache_halves_the_disk_and_keeps_the_results(axis_experiment_inputs, tmp_path):
    def payload(folder):
        """Bytes of cached activations and gradients (not the small float64 CAV
        coefficients and stats)."""
        arrays = [np.load(p, mmap_mode="r") for p in folder.rglob("*.npy")]
        return sum(a.nbytes for a in arrays if a.dtype != np.float64)

    full = make(axis_experiment_inputs, tmp_path / "f32").run()
    half_experiment = make(axis_experiment_inputs, tmp_path / "f16", cache_dtype="float16")
    half = half_experiment.run()
    again = make(axis_experiment_inputs, tmp_path / "f16", cache_dtype="float16").run()
    pd.testing.assert_frame_equal(half.runs, again.runs)  # warm equals cold, bit for bit
    # Same scores (signs are robust); magnitudes within float16 precision.
    assert (full.runs.tcav_score == half.runs.tcav_score).all()
    np.testing.assert_allclose(half.runs.magnitude, full.runs.magnitude, atol=2e-3)
    assert (full.summary.significant == half.summary.significant).all()
    assert payload(tmp_path / "f16") * 2 == payload(tmp_path / "f32") > 0
    with pytest.raises(ConfigError, match="cache_dtype"):
        make(axis_experiment_inputs, tmp_path, cache_dtype="int8")


def test_every_trained_cav_is_in_the_result_relative_runs_included(
    axis_experiment_inputs, tmp_path
):
    split = CavOptions(method="logistic")  # every training example moves its direction
    result = make(axis_experiment_inputs, tmp_path, relative=[("up", "side")], cav=split).run()
    assert len(result.cavs) == result.counts.cavs_trained > 0
    pair = [key for key in result.cavs if key.positive == "up" and key.negative == "side"]
    assert sorted(key.run for key in pair) == list(range(10))  # one CAV per run, each kept
    directions = np.stack([result.cavs[key].direction for key in pair])
    assert len(np.unique(directions.round(6), axis=0)) == 10  # each run its own split
    # Mean-difference directions come from every example: a pair's runs agree exactly.
    whole = make(axis_experiment_inputs, tmp_path / "md", relative=[("up", "side")]).run()
    pair = [key for key in whole.cavs if key.positive == "up" and key.negative == "side"]
    directions = np.stack([whole.cavs[key].direction for key in pair])
    assert len(pair) == 10 and len(np.unique(directions.round(6), axis=0)) == 1


def test_runs_leave_no_state_on_the_experiment(axis_experiment_inputs, tmp_path):
    experiment = make(axis_experiment_inputs, tmp_path, cav=CavOptions(method="sgd"))
    settings = dict(vars(experiment))
    first = experiment.run()
    experiment.concept_cavs("up", "1")
    assert vars(experiment).keys() == settings.keys()
    second = experiment.run()
    pd.testing.assert_frame_equal(first.runs, second.runs)
    assert first.meta["sets"] == second.meta["sets"]
    assert second.counts.sets_from_cache == first.counts.sets_computed


def test_a_run_reports_its_negative_controls(axis_experiment_inputs, tmp_path):
    from tcavkit.report.text import controls_text

    result = make(axis_experiment_inputs, tmp_path).run()
    controls = result.meta["controls"]
    assert controls["tested"] == 12 * 2 * 1  # random sets x targets x layers
    assert 0 <= controls["significant"] <= controls["at_alpha"] <= controls["tested"]
    assert f"of {controls['tested']} random sets tested as if they were concepts" in (
        controls_text(controls)
    )


def test_labels_longer_than_the_model_outputs_are_refused_before_any_pass(
    axis_experiment_inputs, tmp_path
):
    model = axis_model()  # 2 outputs
    counter = model[0]
    with pytest.raises(ConfigError, match=r"^model\.labels lists 3 labels but the model has 2 "):
        make(axis_experiment_inputs, tmp_path, model=model, labels=["a", "b", "c"]).run()
    assert counter.calls == 1  # one example, no pass
    make(axis_experiment_inputs, tmp_path, model=model).run()
    calls = counter.calls
    # a warm run checks the labels against the width cached by the cold one, model unused
    with pytest.raises(ConfigError, match=r"lists 4 labels but the model has 2 outputs"):
        make(axis_experiment_inputs, tmp_path, model=model, labels=["a", "b", "c", "d"]).run()
    assert counter.calls == calls


def test_a_target_index_past_the_outputs_is_refused_before_any_pass(
    axis_experiment_inputs, tmp_path
):
    targets, concepts, random = axis_experiment_inputs
    inputs = ({"1": targets["a"], "2": targets["b"]}, concepts, random)
    model = axis_model()
    with pytest.raises(ConfigError, match=r"target '2' is class index 2 but the model has 2"):
        make(inputs, tmp_path, model=model, labels=None).run()
    assert model[0].calls == 1  # one example, no pass
