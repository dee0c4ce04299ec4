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


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tcavkit.demo.text import write_tokenizer

    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_batches_are_padded_to_their_own_longest_text_with_a_mask(tmp_path, tokenizer):
    from tcavkit.examples.base import Selection
    from tcavkit.examples.text import TextSource, TokenizerEncoder

    (tmp_path / "s.txt").write_text("the movie\n\nthe movie was very long\nit\n")
    encoder = TokenizerEncoder(tokenizer, max_length=6)
    before = encoder.fingerprint()
    examples = TextSource(tmp_path / "s.txt", encoder).resolve("s", Selection(min_examples=2))
    batches = examples.load(None)
    assert len(batches) == 3 and examples.preview(2) == ["the movie", "the movie was very long"]
    first = batches[0:1]  # [CLS] the movie [SEP]: 4 tokens, no padding
    assert first["input_ids"].shape == (1, 4) and first["attention_mask"].tolist() == [[1] * 4]
    both = batches[1:3]  # truncated to 6 tokens; "it" padded to them, its mask 0 there
    assert both["input_ids"].shape == (2, 6)
    assert both["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert encoder.fingerprint() == before  # a call's padding state is not in the key
    assert TokenizerEncoder(tokenizer, max_length=7).fingerprint() != before


def test_text_files_and_their_errors(tmp_path, tokenizer):
    from tcavkit.errors import DataError
    from tcavkit.examples.text import read_texts

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert read_texts(tmp_path / "a.jsonl", "a") == ["one", "two"]
    (tmp_path / "b.csv").write_text('text,label\n"x, y",1\nz,0\n')
    assert read_texts(tmp_path / "b.csv", "b") == ["x, y", "z"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "1.txt").write_text("first file\nstill first\n")
    (tmp_path / "c" / "2.txt").write_text("second")
    assert read_texts(tmp_path / "c", "c") == ["first file\nstill first", "second"]
    (tmp_path / "d.csv").write_text("sentence\nhello\n")
    with pytest.raises(DataError, match=r"d\.csv has no column 'text'"):
        read_texts(tmp_path / "d.csv", "d")
    (tmp_path / "e.jsonl").write_text('{"text": "ok"}\n{"body": "no"}\n')
    with pytest.raises(DataError, match=r"e\.jsonl line 2 has no string 'text' key"):
        read_texts(tmp_path / "e.jsonl", "e")
    with pytest.raises(DataError, match=r"f\.txt does not exist"):
        read_texts(tmp_path / "f.txt", "f")


def test_a_hub_name_without_a_local_copy_is_a_one_line_error(tmp_path, monkeypatch):
    from tcavkit.config import ModelSpec
    from tcavkit.errors import ModelError
    from tcavkit.models.loading import load_model

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    spec = ModelSpec(huggingface={"path": "no-such-org/no-such-model"}, layers=["x"])
    with pytest.raises(ModelError, match="not a local folder.*save_pretrained") as error:
        load_model(spec, device="cpu")
    assert "\n" not in str(error.value)


def test_layers_of_a_transformers_folder(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from tcavkit.demo.text import VOCABULARY, write_tokenizer
    from tcavkit.models.inspect import layer_shapes

    folder = tmp_path / "bert"
    write_tokenizer(folder).save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(VOCABULARY),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    shapes = dict(layer_shapes(folder))
    # "tcavkit lists the layers of this model": [CLS] + 7 words (unknown ones too) + [SEP]
    assert shapes["bert.encoder.layer.0"] == "(1, 9, 8)"
    assert shapes["classifier"] == "(1, 2)"
