"""Text models end to end: a tiny BERT built from a config (no download) with planted ground
truth (positive exactly when a sentence holds a P-word), its tokenizer from a vocabulary
file written here, text sets of different lengths, cls and mean pooling."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("transformers", reason="the text tests need pip install 'tcavkit[text]'")

from tcavkit import Experiment
from tcavkit.demo.text import LAYER, MAX_LENGTH, train_text_model, write_text_sets


@pytest.fixture(scope="module")
def text_experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    trained = train_text_model(root / "model")
    assert trained.test_accuracy >= 0.97, trained.test_accuracy
    write_text_sets(root / "data")
    config = {
        "model": {
            "huggingface": {"path": "model"},
            "layers": [LAYER],
            "pooling": "cls",
            "max_length": MAX_LENGTH,
        },
        "data": "data",
        "targets": ["positive"],
        "concepts": ["pwords", "colours"],
        "random": {"runs": 12},
        "examples": {"max": 40, "min": 10},
        "batch_size": 16,
        "cache": "cache",
        "device": "cpu",
    }
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_p_words_are_significant_and_colours_are_not(text_experiment, pooling):
    experiment = Experiment.from_config(
        text_experiment, overrides=[f"model.pooling={pooling}"], progress=False
    )
    assert experiment.labels == ["negative", "positive"]  # from the model's id2label
    result = experiment.run()
    summary = result.summary.set_index(["concept"])
    assert summary.loc["pwords"].significant, summary
    assert summary.loc["pwords"].direction == "positive", summary
    assert not summary.loc["colours"].significant, summary
    sets = result.meta["sets"]
    assert sets["pwords"]["n_examples"] == sets["colours"]["n_examples"] == 40
