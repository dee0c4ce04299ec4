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


def test_txt_lines_end_at_line_breaks_only(tmp_path):
    from tcavkit.examples.text import read_texts

    odd = "a\u2028b", "c\x0cd", "e\x85f", "g\x1ch", "i\u2029j"  # splitlines splits these
    (tmp_path / "s.txt").write_bytes("\n".join(odd).encode() + b"\r\nwindows\r\nold mac\rlast")
    assert read_texts(tmp_path / "s.txt", "s") == [*odd, "windows", "old mac", "last"]
    (tmp_path / "s.jsonl").write_text('{"text": "a\u2028b"}\n{"text": "c"}\n', encoding="utf-8")
    assert read_texts(tmp_path / "s.jsonl", "s") == ["a\u2028b", "c"]


def test_a_huge_line_is_cut_before_it_is_tokenized(tmp_path, tokenizer):
    from tcavkit.examples.base import Selection
    from tcavkit.examples.text import CHARS_PER_TOKEN, TextSource, TokenizerEncoder

    huge = "the movie was long " * 300_000  # 5.7 MB on one line
    (tmp_path / "s.txt").write_text(f"short one\n{huge}\n")
    encoder = TokenizerEncoder(tokenizer, max_length=8)
    examples = TextSource(tmp_path / "s.txt", encoder).resolve("s", Selection(min_examples=1))
    assert [len(t) for t in examples.texts] == [9, 8 * CHARS_PER_TOKEN]
    medium = huge[:20_000]  # the cut changes nothing the model sees
    torch_equal = encoder([encoder.clip(medium)])["input_ids"].tolist()
    assert torch_equal == encoder([medium])["input_ids"].tolist()
    tokenizer.truncation_side = "left"
    try:
        assert encoder.clip(medium + "end") == (medium + "end")[-8 * CHARS_PER_TOKEN :]
    finally:
        tokenizer.truncation_side = "right"


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
    shapes = {name: shape for name, _, shape in layer_shapes(folder)}
    # "tcavkit lists the layers of this model": [CLS] + 7 words (unknown ones too) + [SEP]
    assert shapes["bert.encoder.layer.0"] == "(1, 9, 8)"
    assert shapes["classifier"] == "(1, 2)"


@pytest.mark.slow
def test_sort_puts_sentences_with_p_words_first(text_experiment, tmp_path):
    """``tcavkit sort`` on a text file: the planted P-word sentences rank first; every
    sentence is in the table once; the console shows the texts as they were written."""
    import numpy as np
    import pandas as pd
    from typer.testing import CliRunner

    from tcavkit.cli import app
    from tcavkit.demo.text import P_WORDS, sentence

    rng = np.random.default_rng(5)
    with_p = [sentence(rng, p_word=True, colour=i % 2 == 0, words=6) for i in range(8)]
    without = [sentence(rng, p_word=False, colour=i % 2 == 0, words=6) for i in range(8)]
    odd = 'the film, "quite" long & <b>[red]</b> été'  # printed and stored as written
    texts = [*with_p[:4], *without, odd, *with_p[4:]]
    (tmp_path / "reviews.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "sorted"
    args = [str(text_experiment), "--concept", "pwords", "--layer", LAYER]
    where = ["--out", str(out), "--quiet"]
    result = CliRunner().invoke(
        app,
        ["sort", *args, "--examples", str(tmp_path / "reviews.txt"), "--top", "17", *where],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / f"sort-pwords-{LAYER}-reviews.txt.csv", keep_default_na=False)
    assert list(table.columns) == ["rank", "text", "cosine", "projection"]
    assert sorted(table["text"]) == sorted(texts) and list(table["rank"]) == list(range(1, 18))
    top = table.sort_values("rank")["text"][:8].tolist()
    assert sorted(top) == sorted(with_p), table
    assert all(any(w in t.split() for w in P_WORDS) for t in top)
    assert table["cosine"].is_monotonic_decreasing
    assert not list(out.glob("*.png"))  # no contact sheet for text
    lines = result.stdout.splitlines()
    assert any(line.endswith(f"  {odd}") for line in lines), result.stdout
    first = lines.index(f"most like 'pwords' at {LAYER}:")
    assert lines[first + 1].endswith(f"  {top[0]}"), result.stdout
    # With --top 3 the console shows the three least like the concept after "least like".
    again = CliRunner().invoke(
        app,
        ["sort", *args, "--images", str(tmp_path / "reviews.txt"), "-k", "3", *where],
    )
    assert again.exit_code == 0, again.output
    lines = again.stdout.splitlines()
    last = lines.index(f"least like 'pwords' at {LAYER}:")
    bottom = table.sort_values("rank")["text"][-3:].tolist()
    assert [line.split(None, 2)[2] for line in lines[last + 1 : last + 4]] == bottom
