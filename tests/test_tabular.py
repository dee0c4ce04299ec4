"""Tabular models: ``<data>/<name>.csv`` sets with ``model.columns``, their one-line errors,
and planted ground truth: an MLP trained on y = 1[x0 + x1 > 0] over 8 features uses x0 for
class 1 and ignores x5."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from tcavkit import Experiment
from tcavkit.errors import DataError
from tcavkit.examples.base import Selection
from tcavkit.examples.tables import CsvTable

FEATURES = [f"x{i}" for i in range(8)]


def train_mlp(seed: int = 0) -> nn.Sequential:
    """8 → 32 → 32 → 2 MLP on y = 1[x0 + x1 > 0] (test accuracy checked ≥ 0.97)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(4000, 8)).astype(np.float32))
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x[:3000]), y[:3000]).backward()
        optimiser.step()
    accuracy = (model(x[3000:]).argmax(1) == y[3000:]).float().mean().item()
    assert accuracy >= 0.97, accuracy
    return model.eval()


def write_table(path: Path, rows: np.ndarray) -> None:
    """The features in reverse column order with a text column, so ``columns`` must select
    and order them."""
    table = pd.DataFrame(rows, columns=FEATURES)[FEATURES[::-1]]
    table.insert(0, "note", [f"row {i}" for i in range(len(rows))])
    table.to_csv(path, index=False)


@pytest.fixture(scope="module")
def tabular_experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tabular")
    torch.jit.script(train_mlp()).save(str(root / "mlp.pt"))
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(3000, 8))
    write_table(data / "pos.csv", pool[pool[:, 0] + pool[:, 1] > 0][:60])
    for feature in (0, 5):
        rows = rng.normal(size=(60, 8))
        rows[:, feature] = rng.normal(2.0, 0.5, size=60)
        write_table(data / f"x{feature}_high.csv", rows)
    for i in range(12):
        write_table(data / f"random500_{i}.csv", rng.normal(size=(60, 8)))
    config = {
        "model": {
            "path": "mlp.pt",
            "layers": ["1", "3"],
            "labels": ["neg", "pos"],
            "columns": FEATURES,
        },
        "data": "data",
        "targets": ["pos"],
        "concepts": ["x0_high", "x5_high"],
        "random": {"runs": 12},
        "examples": {"max": 60, "min": 10},
        "cache": "cache",
        "device": "cpu",
    }
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_planted_feature_is_significant_and_ignored_feature_is_not(tabular_experiment):
    result = Experiment.from_config(tabular_experiment, progress=False).run()
    summary = result.summary.set_index(["target", "concept", "layer"])
    for layer in ("1", "3"):
        high = summary.loc[("pos", "x0_high", layer)]
        assert high.significant and high.direction == "positive", summary
        assert high["mean"] > high.null_mean, summary
        assert not summary.loc[("pos", "x5_high", layer)].significant, summary
    assert result.meta["sets"]["pos"]["n_examples"] == 60


def test_columns_select_and_order_the_features(tmp_path):
    rows = np.arange(24, dtype=np.float64).reshape(3, 8)
    write_table(tmp_path / "t.csv", rows)
    examples = CsvTable(tmp_path / "t.csv", FEATURES).resolve("t", Selection(min_examples=2))
    torch.testing.assert_close(examples.load(None), torch.from_numpy(rows).float())
    reordered = CsvTable(tmp_path / "t.csv", ["x7", "x0"]).resolve("t", Selection(min_examples=2))
    torch.testing.assert_close(reordered.load(None), torch.from_numpy(rows[:, [7, 0]]).float())
    assert reordered.fingerprint != examples.fingerprint


def test_table_errors_name_the_file_and_the_column(tmp_path):
    write_table(tmp_path / "t.csv", np.zeros((3, 8)))
    select = Selection(min_examples=2)
    with pytest.raises(DataError, match=r"t\.csv has no column 'x9' \(model\.columns\)"):
        CsvTable(tmp_path / "t.csv", ["x0", "x9"]).resolve("t", select)
    with pytest.raises(DataError, match=r"t\.csv column 'note' is not numeric \('row 0' in data"):
        CsvTable(tmp_path / "t.csv").resolve("t", select)  # every column, the text one too
    table = pd.read_csv(tmp_path / "t.csv")
    table.loc[1, "x3"] = None
    table.to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(
        DataError, match=r"column 'x3' is not numeric \(an empty cell in data row 2"
    ):
        CsvTable(tmp_path / "gap.csv", FEATURES).resolve("gap", select)
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        CsvTable(tmp_path / "nope.csv", FEATURES).resolve("nope", select)


@pytest.mark.parametrize(
    ("cell", "shown"), [("-inf", "-inf"), ("inf", "inf"), ("nan", "nan"), ("1e39", "1e+39")]
)
def test_non_finite_values_are_refused_naming_file_column_and_row(tmp_path, cell, shown):
    rows = "\n".join(f"{i},{i + 1}" for i in range(5))
    (tmp_path / "target.csv").write_text(f"a,b\n{rows}\n7,{cell}\n")
    with pytest.raises(
        DataError, match=rf"target\.csv column 'b' holds '{re.escape(shown)}' in data row 6"
    ):
        CsvTable(tmp_path / "target.csv", ["a", "b"]).resolve("target", Selection(min_examples=2))


def test_text_cells_that_pandas_calls_missing_are_named_as_written(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,NA\n")
    with pytest.raises(DataError, match=r"column 'b' is not numeric \('NA' in data row 2"):
        CsvTable(tmp_path / "t.csv", ["a", "b"]).resolve("t", Selection(min_examples=1))


def test_layers_of_a_tabular_model(tmp_path):
    from tcavkit.models.inspect import layer_shapes

    model = nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 2))
    torch.jit.script(model).save(str(tmp_path / "mlp.pt"))
    assert layer_shapes(tmp_path / "mlp.pt") == [
        ("0", "Linear", "(1, 5)"),
        ("1", "ReLU", "(1, 5)"),
        ("2", "Linear", "(1, 2)"),
    ]
