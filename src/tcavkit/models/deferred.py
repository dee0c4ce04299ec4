"""A model file that is loaded only when the model has to run: :class:`DeferredModel`.

A run whose activations, gradients and CAVs are all in the cache never runs the model; it
needs only what identifies the model and what its settings are checked against. For a
model file that holds the whole model (a TorchScript file, an ONNX file, a Keras file),
those facts are kept in the cache folder after the file is first loaded, under a key made
of the file's SHA-256 (remembered between runs like the examples' digests), the loader,
the settings that shape the adapter (``model.logits``, ``model.output``, trust) and the
versions of the packages that load the file:

- the model's fingerprint (the cache keys' model part, as the loaded adapter computes it);
- its layer names, and the layers its adapter has accepted so far;
- its fixed input size (Keras, ONNX), which sets ``model.input.size`` when that is unset.

With the facts in the cache, neither the file nor torch is loaded until a pass has to run
the model (a cache miss, :meth:`run`, :meth:`activations`, :meth:`gradients`); then the
file is loaded as :func:`~tcavkit.models.loading.load_model` loads it. A layer the adapter
has not accepted before is checked on the loaded model, so every error message is the
loaded adapter's own.

Models whose identity lies partly outside the file are always loaded at once
(:func:`open_model`): a ``model.factory`` (its code), a pickled ``torch.save`` module (its
classes' code), and any model without a cache folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tcavkit.config import ModelSpec
from tcavkit.errors import ModelError
from tcavkit.examples.digests import remembered_digests
from tcavkit.models.adapter import ModelAdapter, resolve_device
from tcavkit.models.loading import KERAS_SUFFIXES, check_spec, load_model, model_file_kind
from tcavkit.store import ArrayStore, cache_key
from tcavkit.version import installed_versions

if TYPE_CHECKING:
    import torch

FACTS_VERSION = 1
"""Part of the facts' key: bump when what is recorded, or how, changes."""


def deferred_kind(spec: ModelSpec) -> str | None:
    """The loader of a model file that holds the whole model (``"torchscript"``,
    ``"onnx"``, ``"keras"``), or ``None`` when the model cannot be deferred."""
    if spec.path is None or spec.factory is not None or spec.huggingface is not None:
        return None
    if spec.pooling != "none" or spec.max_length is not None:
        return None  # pooled (sequence) models load at once: the facts do not record pooling
    path = Path(spec.path)
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    return "torchscript" if path.is_file() and model_file_kind(path) == "torchscript" else None


def open_model(
    spec: ModelSpec,
    *,
    device: str = "auto",
    trust_model_file: bool = False,
    base_dir: Path | None = None,
    cache_dir: str | Path | None = None,
) -> ModelAdapter:
    """The adapter of the ``model`` section: a :class:`DeferredModel` for a TorchScript,
    ONNX or Keras file when there is a cache folder, else the loaded model
    (:func:`~tcavkit.models.loading.load_model`; same arguments)."""
    kind = deferred_kind(spec)
    if kind is None or cache_dir is None:
        return load_model(spec, device=device, trust_model_file=trust_model_file, base_dir=base_dir)
    check_spec(spec)
    return DeferredModel(
        spec,
        kind,
        ArrayStore(cache_dir),
        device=device,
        trust_model_file=trust_model_file,
        base_dir=base_dir,
    )


def _versions(kind: str) -> dict[str, str]:
    """The versions of the packages that load a ``kind`` file (from their metadata)."""
    packages = {"torchscript": ["torch"], "onnx": ["torch", "onnx", "onnx2torch"]}
    return installed_versions(packages.get(kind, ["torch", "keras"]))


class DeferredModel(ModelAdapter):
    """A TorchScript, ONNX or Keras model file, loaded on first use (see the module).

    Args:
        spec: the model section (``spec.path`` absolute).
        kind: the file's loader (:func:`deferred_kind`).
        store: the cache folder that keeps the model's facts.
        device, trust_model_file, base_dir: as for
            :func:`~tcavkit.models.loading.load_model`.

    Raises:
        ModelError: the file cannot be read, or (facts not cached) cannot be loaded.
        LayerError: ``model.logits`` is not a layer of the model.
    """

    def __init__(
        self,
        spec: ModelSpec,
        kind: str,
        store: ArrayStore,
        *,
        device: str = "auto",
        trust_model_file: bool = False,
        base_dir: Path | None = None,
    ) -> None:
        # ModelAdapter.__init__ is not called: it resolves the device and checks the logits
        # layer on the model; here both wait until they are needed.
        self._spec = spec
        self._device = device
        self._trusted = bool(trust_model_file)
        self._base_dir = base_dir
        self._store = store
        self._model: ModelAdapter | None = None
        self._resolved: torch.device | None = None
        self.logits_layer = spec.logits
        self.output = spec.output
        path = Path(str(spec.path))
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist (model.path)")
        try:
            with remembered_digests(store.root) as digests:
                assert digests is not None
                file_digest = digests.sha256(path)
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
        self._key = cache_key(
            kind="model-facts",
            facts=FACTS_VERSION,
            file=file_digest,
            loader=kind,
            logits=spec.logits,
            output=spec.output,
            trusted=self._trusted,
            versions=_versions(kind),
        )
        facts = store.get_meta(self._key).get("facts")
        self._facts: dict[str, Any] = facts if _well_formed(facts) else self._load_facts()
        if self.logits_layer is not None:
            self.check_layers([self.logits_layer])

    # -- the loaded model -------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """Whether the model file has been loaded."""
        return self._model is not None

    @property
    def model(self) -> ModelAdapter:
        """The loaded adapter (the file is loaded on first access).

        The first access may come from inside a forward pass's ``torch.inference_mode()``
        (``pooled_activations`` enters it before calling :meth:`run`); the file is loaded
        outside it, else its weights would be inference tensors and every later gradient
        pass would fail ("Inference tensors cannot be saved for backward")."""
        if self._model is None:
            import torch

            with torch.inference_mode(False):
                self._model = load_model(
                    self._spec,
                    device=self._device,
                    trust_model_file=self._trusted,
                    base_dir=self._base_dir,
                )
        return self._model

    def _load_facts(self) -> dict[str, Any]:
        model = self.model
        size = getattr(model, "input_size", None)
        facts = {
            "fingerprint": model.fingerprint(),
            "layers": list(model.layer_names()),
            "accepted": [],
            "input_size": list(size) if size else None,
        }
        self._save(facts)
        return facts

    def _save(self, facts: dict[str, Any]) -> None:
        self._store.put(self._key, np.zeros(0, dtype=np.uint8), meta={"facts": facts})

    # -- ModelAdapter, from the facts -------------------------------------------------------
    @property
    def device(self) -> torch.device:  # type: ignore[override]
        if self._model is not None:
            return self._model.device
        if self._resolved is None:
            self._resolved = resolve_device(self._device)
        return self._resolved

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The model's fixed ``(height, width)`` input, or ``None``."""
        size = self._facts.get("input_size")
        return (int(size[0]), int(size[1])) if size else None

    def layer_names(self) -> list[str]:
        return list(self._facts["layers"])

    def fingerprint(self) -> str:
        return str(self._facts["fingerprint"])

    def check_layers(self, layers: Sequence[str]) -> None:
        """Layers the loaded adapter accepted before pass; any other is checked on the
        loaded model (whose error it raises), then remembered."""
        accepted = set(self._facts["accepted"])
        new = [layer for layer in layers if layer not in accepted]
        if not new:
            return
        self.model.check_layers(new)
        self._facts = {**self._facts, "accepted": sorted(accepted | set(new))}
        self._save(self._facts)

    # -- running: the loaded model --------------------------------------------------------
    def run(
        self, x: torch.Tensor, layers: Sequence[str], *, need_output: bool
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        return self.model.run(x, layers, need_output=need_output)

    def activations(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.model.activations(x, layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)

    def layer_kinds(self) -> dict[str, str]:
        return self.model.layer_kinds()

    def capture_what_runs(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.model.capture_what_runs(x, layers)

    def gradients(
        self,
        x: torch.Tensor,
        class_index: int,
        layers: Sequence[str],
        objective: str = "logit",
    ) -> dict[str, torch.Tensor]:
        return self.model.gradients(x, class_index, layers, objective)

    # Only HuggingFace adapters (never deferred) carry a tokenizer or their own labels.
    encoder: Any = None
    labels: list[str] | None = None
    pooling: Any = "none"  # pooled models are never deferred (see deferred_kind)

    def __getattr__(self, name: str) -> Any:
        # anything else (``module``, ...) is the loaded adapter's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.model, name)


def _well_formed(facts: Any) -> bool:
    """Whether cached facts have every field, of the right type."""
    return (
        isinstance(facts, dict)
        and isinstance(facts.get("fingerprint"), str)
        and isinstance(facts.get("layers"), list)
        and isinstance(facts.get("accepted"), list)
        and (facts.get("input_size") is None or isinstance(facts.get("input_size"), list))
    )
