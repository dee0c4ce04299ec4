"""The text demo's planted ground truth: a tiny BERT that can only use "P-words".

Sentences are drawn from a vocabulary of 60 words; a sentence is positive exactly when it
holds a word of :data:`P_WORDS`. Colour words appear in half the sentences whatever the
label. A 2-layer BERT (hidden size 32) built from a config, with a WordPiece tokenizer made
from a vocabulary file written here, learns the rule in seconds. TCAV must then mark the
concept "sentences with P-words" significant and positive for the positive class, and
"colour words" not. Nothing is downloaded. Needs ``pip install 'tcavkit[text]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tcavkit.models.extras import require

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
P_WORDS = ("great", "excellent", "wonderful", "superb", "lovely", "brilliant")
COLOUR_WORDS = ("red", "blue", "green", "yellow", "purple", "orange")
NEUTRAL_WORDS = tuple(
    [
        "the",
        "a",
        "this",
        "that",
        "movie",
        "film",
        "plot",
        "story",
        "actor",
        "actress",
        "scene",
        "music",
        "score",
        "ending",
        "was",
        "is",
        "felt",
        "seemed",
        "and",
        "but",
        "with",
        "very",
        "quite",
        "rather",
        "long",
        "short",
        "slow",
        "fast",
        "today",
        "yesterday",
        "we",
        "i",
        "saw",
        "watched",
        "it",
        "its",
        "of",
        "in",
        "on",
        "at",
    ]
)
VOCABULARY = (*SPECIAL_TOKENS, *P_WORDS, *COLOUR_WORDS, *NEUTRAL_WORDS)
LABELS = ("negative", "positive")
LAYER = "bert.encoder.layer.1"
MAX_LENGTH = 24


def sentence(rng: np.random.Generator, *, p_word: bool, colour: bool, words: int) -> str:
    """``words`` neutral words, with one P-word and/or one colour word put in at random."""
    chosen = list(rng.choice(NEUTRAL_WORDS, size=words))
    for wanted, pool in ((p_word, P_WORDS), (colour, COLOUR_WORDS)):
        if wanted:
            chosen.insert(int(rng.integers(0, len(chosen) + 1)), str(rng.choice(pool)))
    return " ".join(chosen)


def labelled_sentences(
    rng: np.random.Generator, n: int, lengths: tuple[int, int] = (4, 12), positive: float = 0.5
) -> tuple[list[str], np.ndarray]:
    """``n`` sentences and their labels ``(n,)``: 1 (with probability ``positive``) exactly
    when a P-word is in it; a colour word in each with probability 1/2, independent of the
    label."""
    labels = (rng.random(n) < positive).astype(np.int64)
    colours = rng.random(n) < 0.5
    texts = [
        sentence(rng, p_word=bool(y), colour=bool(c), words=int(rng.integers(*lengths)))
        for y, c in zip(labels, colours, strict=True)
    ]
    return texts, labels


def write_tokenizer(folder: Path):
    """Write ``vocab.txt`` into ``folder`` and load the BERT tokenizer from it."""
    transformers = require("transformers", "text", "the text demo")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    return transformers.BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)


@dataclass(frozen=True)
class TrainedText:
    """Where the model and tokenizer were saved, and the held-out accuracy."""

    folder: Path
    test_accuracy: float


def train_text_model(folder: Path, *, seed: int = 0, steps: int = 300) -> TrainedText:
    """Train the tiny BERT on labelled sentences and ``save_pretrained`` it (and its
    tokenizer) into ``folder``."""
    transformers = require("transformers", "text", "the text demo")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tokenizer = write_tokenizer(folder)
    config = transformers.BertConfig(
        vocab_size=len(VOCABULARY),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH + 8,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model = transformers.BertForSequenceClassification(config)
    texts, labels = labelled_sentences(rng, 2400)
    inputs = tokenizer(texts, padding="longest", return_tensors="pt")
    y = torch.from_numpy(labels)
    train, test = slice(0, 2000), slice(2000, None)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        rows = torch.from_numpy(rng.integers(0, 2000, size=64))
        batch = {key: value[train][rows] for key, value in inputs.items()}
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, y[train][rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        held_out = {key: value[test] for key, value in inputs.items()}
        accuracy = (model(**held_out).logits.argmax(1) == y[test]).float().mean().item()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return TrainedText(folder, accuracy)


RANDOM_POSITIVE = 0.15
"""The share of sentences with a P-word in the random sets ("text in general")."""


def write_text_sets(data: Path, *, seed: int = 0, n_per_set: int = 40, n_random: int = 12) -> None:
    """The demo's sets as ``.txt`` files (one sentence per line): the targets ``positive``
    and ``negative``; the concepts ``pwords`` (3-8 words, each with a P-word, half with a
    colour) and ``colours`` (6-13 words, each with a colour, P-words as often as in the
    random sets), so the concept sets have different lengths and each differs from the
    random sets in one planted feature; and ``random500_*``, general sentences
    (:data:`RANDOM_POSITIVE` of them with a P-word, half with a colour, 4-11 words)."""
    rng = np.random.default_rng(seed + 1)
    data.mkdir(parents=True, exist_ok=True)

    def write(name: str, texts: list[str]) -> None:
        (data / f"{name}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")

    for label, name in enumerate(LABELS):
        write(
            name,
            [
                sentence(rng, p_word=bool(label), colour=rng.random() < 0.5, words=w)
                for w in rng.integers(4, 12, size=n_per_set)
            ],
        )
    write(
        "pwords",
        [
            sentence(rng, p_word=True, colour=rng.random() < 0.5, words=w)
            for w in rng.integers(3, 8, size=n_per_set)
        ],
    )
    write(
        "colours",
        [
            sentence(rng, p_word=rng.random() < RANDOM_POSITIVE, colour=True, words=w)
            for w in rng.integers(6, 13, size=n_per_set)
        ],
    )
    for i in range(n_random):
        texts = labelled_sentences(rng, n_per_set, positive=RANDOM_POSITIVE)[0]
        write(f"random500_{i}", texts)
