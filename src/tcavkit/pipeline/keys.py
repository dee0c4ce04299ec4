"""What identifies each cached entry: the content keys of activations, gradients and CAVs.

A key holds everything that decides the entry's values and nothing else: the model's
fingerprint, the layer, the exact example set, the preprocessing, the storage precision,
the layer's pooling (when it is not ``none``) and, per kind, the class, output and
differentiated objective (gradients) or the tasks and learner (CAVs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tcavkit import scoring
from tcavkit.cav import learners
from tcavkit.cav.vector import CavTask
from tcavkit.examples.base import ExampleSet
from tcavkit.options import CavOptions, Preprocessing
from tcavkit.store import cache_key


@dataclass(frozen=True)
class KeyMaker:
    """Cache keys for one model, preprocessing and storage precision.

    Attributes:
        model: the model's fingerprint.
        pooling: ``(layer, pooling)`` of the layers whose sequence outputs are pooled (the
            layers left out are ``none``, which adds nothing to a key).
    """

    model: str
    preprocessing: Preprocessing
    cache_dtype: str = "float32"
    pooling: tuple[tuple[str, str], ...] = ()

    def _pooling(self, layer: str) -> dict[str, str]:
        """The layer's pooling as a key part (none for ``none``)."""
        how = dict(self.pooling).get(layer, "none")
        return {} if how == "none" else {"pooling": how}

    def _storage(self) -> dict[str, str]:
        """The storage precision's key part (none for float32, the default)."""
        return {} if self.cache_dtype == "float32" else {"storage": self.cache_dtype}

    def _key(self, kind: str, layer: str, examples: ExampleSet, **extra: Any) -> str:
        return cache_key(
            kind=kind,
            model=self.model,
            layer=layer,
            examples=examples.fingerprint,
            preprocessing=self.preprocessing.fingerprint(),
            **self._pooling(layer),
            **extra,
        )

    def activations(self, layers: Sequence[str], examples: ExampleSet) -> dict[str, str]:
        """{layer: key} of a set's activations."""
        return {
            layer: self._key("activations", layer, examples, **self._storage()) for layer in layers
        }

    def outputs(self, logits: str | None, output: Any) -> str:
        """The key of the model's output width (its number of classes), read from the
        layer or output part that holds the logits."""
        return cache_key(kind="model-outputs", model=self.model, logits=logits, output=output)

    def gradients(
        self,
        layers: Sequence[str],
        examples: ExampleSet,
        class_index: int,
        logits: str | None,
        output: Any,
        objective: str = "logit",
    ) -> dict[str, str]:
        """{layer: key} of the gradients of class ``class_index``'s ``objective`` (its logit,
        or its log-softmax) on a set. The logit's keys carry no objective part."""
        differentiated = {} if objective == "logit" else {"objective": objective}
        return {
            layer: self._key(
                "gradients",
                layer,
                examples,
                class_index=class_index,
                logits=logits,
                output=output,
                **differentiated,
                **self._storage(),
            )
            for layer in layers
        }

    def cavs(
        self,
        layer: str,
        tasks: Sequence[CavTask],
        sets: dict[str, ExampleSet],
        options: CavOptions,
    ) -> str:
        """Key of a layer's CAV coefficients: the activations they are trained on, the
        tasks' examples and seeds, and the learner."""
        digest = hashlib.sha256()
        for task in tasks:
            digest.update(
                f"{sets[task.positive].fingerprint}|{sets[task.negative].fingerprint}|"
                f"{task.seed}\n".encode()
            )
        return cache_key(
            kind="cav-coefficients",
            model=self.model,
            layer=layer,
            preprocessing=self.preprocessing.fingerprint(),
            storage=self.cache_dtype,
            cav=asdict(options),
            learners=learners.VERSION,
            tasks=digest.hexdigest(),
            **self._pooling(layer),
        )

    @staticmethod
    def cav_stats(cavs_key: str) -> str:
        """Key of the stats (intercept, accuracy, separation) beside a layer's CAVs."""
        return cache_key(kind="cav-stats", cavs=cavs_key)

    @staticmethod
    def cav_scores(cavs_key: str, gradient_keys: Sequence[str]) -> str:
        """Key of the scores of a layer's CAVs (``cavs_key``) for the targets whose gradients
        at that layer are the entries ``gradient_keys``, in that order."""
        return cache_key(
            kind="cav-scores", cavs=cavs_key, gradients=list(gradient_keys), scoring=scoring.VERSION
        )
