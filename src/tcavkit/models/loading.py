"""Turn the ``model`` section of an experiment (:class:`~tcavkit.config.ModelSpec`) into an
adapter.

Ways to give a model:

- ``model.path``: a TorchScript file (``torch.jit.save``), loaded without pickle (no Python of
  the file's choosing runs while loading; its compiled ``forward`` is still the author's
  program, which can read and write files when the model runs: TorchScript is not a
  sandbox); or a whole module
  saved with ``torch.save(model)``, which is a pickle and is loaded only when the person
  running the command says the file is trusted (``--trust-model-file`` or
  ``TCAVKIT_TRUST_MODEL_FILE=1``; ``trust_model_file=True`` in Python), never because the
  experiment file says so.
- ``model.path`` ending in ``.keras``, ``.h5`` or ``.hdf5``: a Keras 3 model, run on Keras's
  PyTorch backend (:mod:`tcavkit.models.keras`; needs ``pip install 'tcavkit[keras]'``).
- ``model.path`` ending in ``.onnx``: an ONNX model, converted to a PyTorch module with
  onnx2torch; its layers are the ONNX node names (:mod:`tcavkit.models.onnx`; needs
  ``pip install 'tcavkit[onnx]'``).
- ``model.factory: "package.module:callable"``, called with ``model.factory_args`` as
  keyword arguments (none by default) to build the architecture, e.g.
  ``torchvision.models:resnet18`` or ``timm:create_model``, plus optionally
  ``model.weights``, a state_dict file loaded with ``weights_only=True`` (no code runs).
- ``model.huggingface: {path: FOLDER, tokenizer: FOLDER}``, or ``model.factory: transformers``
  with ``model.path: FOLDER``: a ``transformers`` sequence classifier and its tokenizer saved
  with ``save_pretrained`` (:mod:`tcavkit.models.huggingface`; needs
  ``pip install 'tcavkit[text]'``).

``model.pooling`` sets how each layer's sequence outputs are pooled (see
:mod:`tcavkit.models.pooling`).
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tcavkit.config import TRUST_ENV_VAR, ModelSpec
from tcavkit.errors import ConfigError, ModelError, TcavWarning, one_line
from tcavkit.models.adapter import ModelAdapter, Pooling, TorchModel

if TYPE_CHECKING:  # torch is imported where a model is loaded
    import torch
    from torch import nn

FileKind = Literal["torchscript", "pickle", "unknown"]
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
"""File name endings of Keras model files."""

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
_OPTIONAL_SUFFIX = ".num_batches_tracked"
# Import names of model-zoo packages → what to pip install when one is missing.
_PIP_NAMES = {
    "torchvision": "torchvision",
    "timm": "timm",
    "transformers": "transformers",
    "huggingface_hub": "huggingface_hub",
    "open_clip": "open_clip_torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "torchaudio": "torchaudio",
    "safetensors": "safetensors",
}


def _few(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" … ({len(keys)} in all)" if len(keys) > n else "")


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU, without the deprecation warning of recent torch."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


# -- files ----------------------------------------------------------------------------------
def model_file_kind(path: str | Path) -> FileKind:
    """What a model file holds, judged from its bytes without loading it.

    ``"torchscript"``: a ``torch.jit.save`` archive (zip with ``constants.pkl`` and
    ``code/``); ``"pickle"``: a ``torch.save`` file (zip with ``data.pkl``, or the legacy
    pickle format); ``"unknown"``: anything else.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                return "torchscript"
            if any(n.endswith("data.pkl") for n in names):
                return "pickle"
            return "unknown"
        with path.open("rb") as fh:
            head = fh.read(1)
    except (OSError, zipfile.BadZipFile):
        return "unknown"
    return "pickle" if head == b"\x80" else "unknown"


TRUST_HINT = f"pass --trust-model-file (or set {TRUST_ENV_VAR}=1)"
"""How the person running a command says that a model file may run code."""


def _refuse_pickle(path: Path) -> ModelError:
    return ModelError(
        f"{path} is a pickled PyTorch module: loading it can run arbitrary code. If you trust "
        f"this file, {TRUST_HINT}; otherwise save a TorchScript file or a state_dict and use "
        "model.factory"
    )


def _load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, without torch's warning about a pickle
    protocol other than 2 (the file is refused or unpickled right after, with its own
    message)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
        return torch.load(path, weights_only=True, map_location="cpu")


def _unpickle_trusted(path: Path, search_dirs: Iterable[Path]) -> Any:
    """``torch.load`` with pickle allowed; the classes it names must be importable, from
    ``sys.path`` or else from ``search_dirs`` (on ``sys.path`` only while unpickling)."""
    import torch

    def load() -> Any:
        return torch.load(path, weights_only=False, map_location="cpu")

    try:
        try:
            return load()
        except ModuleNotFoundError:
            folders = _not_on_path(search_dirs)
            if not folders:
                raise
            with _on_path(folders):
                return load()
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ModelError(
            f"{path}: the pickled model refers to code that cannot be imported "
            f"({one_line(exc)}): install the package that defines the model or add its folder "
            "to PYTHONPATH, or save a TorchScript file or a state_dict and use model.factory"
        ) from exc
    except Exception as exc:
        raise ModelError(f"cannot load model file {path}: {one_line(exc)}") from exc


def _load_model_file(path: Path, trusted: bool, search_dirs: tuple[Path, ...]) -> nn.Module:
    import torch

    if not path.exists():
        raise ModelError(f"model file {path} does not exist (model.path)")
    if not path.is_file():
        raise ModelError(f"model.path {path} is not a file: give a TorchScript or torch.save file")
    kind = model_file_kind(path)
    if kind != "pickle":
        try:
            return _jit_load(path)
        except Exception as exc:
            if kind == "torchscript":
                raise ModelError(
                    f"{path} looks like a TorchScript file but cannot be loaded: {one_line(exc)}"
                ) from exc
            raise ModelError(
                f"{path} is neither a TorchScript file (torch.jit.save) nor a PyTorch file "
                "(torch.save): save the model with one of them"
            ) from exc
    try:  # safe: tensors and plain containers only
        obj = _load_weights_only(path)
    except pickle.UnpicklingError as exc:
        if not trusted:
            raise _refuse_pickle(path) from exc
        obj = _unpickle_trusted(path, search_dirs)
    except Exception as exc:
        raise ModelError(f"cannot load model file {path}: {one_line(exc)}") from exc
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, Mapping):
        raise ModelError(
            f"{path} holds a state_dict (weights without the architecture): set model.factory to "
            "'package.module:callable' that builds the model, and model.weights to this file "
            "(instead of model.path)"
        )
    raise ModelError(f"{path} holds a {type(obj).__name__}, not a model (torch.nn.Module)")


# -- factory and weights --------------------------------------------------------------------
def _not_on_path(dirs: Iterable[Path]) -> list[str]:
    """The folders of ``dirs`` that are not on ``sys.path``, in order, without repeats."""
    return [
        folder for folder in dict.fromkeys(str(Path(d)) for d in dirs) if folder not in sys.path
    ]


@contextmanager
def _on_path(folders: Sequence[str]) -> Iterator[None]:
    """``folders`` at the front of ``sys.path`` inside the block; afterwards, even after an
    error, ``sys.path`` is exactly what it was before. Modules imported inside the block
    stay in ``sys.modules``. With no folders, ``sys.path`` is left alone."""
    if not folders:
        yield
        return
    saved = list(sys.path)
    sys.path[:0] = folders
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved


def _imported_from(module_name: str, folders: Iterable[str]) -> bool:
    """Whether the (imported) top-level package of ``module_name`` lies in one of ``folders``."""
    top = sys.modules.get(module_name.partition(".")[0])
    if top is None:
        return False
    package_dirs = list(getattr(top, "__path__", None) or [])
    file = getattr(top, "__file__", None)
    locations = package_dirs or ([file] if file else [])
    roots = {Path(location).resolve().parent for location in locations}
    return any(Path(folder).resolve() in roots for folder in folders)


def load_factory(spec: str, search_dirs: Iterable[Path] = ()) -> Callable[..., Any]:
    """The callable named by ``"package.module:callable"`` (``callable`` may be dotted).

    When the module is not importable, it is imported with the folders in ``search_dirs``
    (e.g. the experiment file's folder and the working directory) at the front of
    ``sys.path``, which is restored right after the import.
    """
    return _load_factory(spec, search_dirs)[0]


def _load_factory(spec: str, search_dirs: Iterable[Path]) -> tuple[Callable[..., Any], list[str]]:
    """:func:`load_factory`, plus the folders of ``search_dirs`` that are not on ``sys.path``
    when the factory's package comes from one of them (else ``[]``)."""
    import torch

    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr:
        raise ModelError(
            f"model.factory {spec!r} is not of the form 'package.module:callable' "
            "(e.g. 'torchvision.models:resnet18' or 'my_models:build')"
        )

    def missing_self(exc: ModuleNotFoundError) -> bool:
        return bool(exc.name) and (
            module_name == exc.name or module_name.startswith(f"{exc.name}.")
        )

    folders = _not_on_path(search_dirs)
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not (missing_self(exc) and folders):
                raise
            with _on_path(folders):
                module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        install = f"pip install {_PIP_NAMES[missing]}" if missing in _PIP_NAMES else "install it"
        if missing_self(exc):
            if missing in _PIP_NAMES:
                raise ModelError(
                    f"model.factory {spec!r}: package {missing!r} is not installed: {install}"
                ) from exc
            raise ModelError(
                f"model.factory {spec!r}: cannot import module {module_name!r}; install it or "
                "add its folder to PYTHONPATH (expected the form 'package.module:callable')"
            ) from exc
        if missing and "." not in missing:
            raise ModelError(
                f"model.factory {spec!r}: importing {module_name!r} needs the package "
                f"{missing!r}, which is not installed: {install}"
            ) from exc
        raise ModelError(
            f"model.factory {spec!r}: importing {module_name!r} failed: {one_line(exc)}"
        ) from exc
    except Exception as exc:
        hint = ""
        if "torchvision::" in str(exc):  # torchvision built for another torch (or for CUDA)
            hint = (
                f" (torchvision must be the release built for the installed torch "
                f"{torch.__version__}: install both from the same index)"
            )
        raise ModelError(
            f"model.factory {spec!r}: importing {module_name!r} raised "
            f"{type(exc).__name__}: {one_line(exc)}{hint}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(
                f"model.factory {spec!r}: module {module_name!r} has no attribute {attr!r} "
                "(expected the form 'package.module:callable')"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"model.factory {spec!r} is a {type(obj).__name__}, not a callable")
    return obj, folders if _imported_from(module_name, folders) else []


LIBRARY_FACTORIES: tuple[tuple[str, str], ...] = (
    (r"torchvision\.models(\.(?!utils\b)[a-z][a-z0-9_]*)*", r"[a-z][a-z0-9_]*"),
    (r"timm(\.models)?", r"create_model"),
    (r"transformers", r"[A-Z][A-Za-z0-9]*\.from_(pretrained|config)"),
    (r"tcavkit\.demo\.starters", r"starter_cnn"),
)
"""``(module, callable)`` patterns of the model builders that an experiment file may name in
``model.factory`` without the operator's trust: torchvision's model builders, timm's
``create_model``, a transformers class's ``from_pretrained``/``from_config`` and tcavkit's
demo CNN, each imported from where Python finds the library (not from the experiment's
folder or the working directory). Any other callable runs code the experiment file chose:
it needs ``--trust-model-file``."""

UNTRUSTED_FACTORY_ARGS = ("trust_remote_code",)
"""``factory_args`` that make a library builder run code from files: they need trust too."""


def check_factory_trust(
    spec: str, args: Mapping[str, Any], search_dirs: Iterable[Path], trusted: bool
) -> None:
    """Refuse, before anything is imported, a ``model.factory`` that the operator did not
    trust: one outside :data:`LIBRARY_FACTORIES`, a library module found in the experiment's
    folder or the working directory (``search_dirs``: a file there would stand in for it),
    or :data:`UNTRUSTED_FACTORY_ARGS` set.

    Raises:
        ModelError: naming the factory, why, and ``--trust-model-file``.
    """
    if trusted:
        return
    module_name, _, attr = (part.strip() for part in spec.partition(":"))
    reason = ""
    if not any(
        re.fullmatch(module, module_name) and re.fullmatch(callable_, attr)
        for module, callable_ in LIBRARY_FACTORIES
    ):
        reason = (
            "it is not a model builder of torchvision, timm, transformers or tcavkit, so "
            "calling it runs code that the experiment file chose"
        )
    else:
        top = module_name.partition(".")[0]
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            found = None
        places = list(found.submodule_search_locations or []) if found else []
        if found and found.origin and not places:
            places = [found.origin]
        roots = {Path(place).resolve().parent for place in places}
        folders = {Path(folder).resolve() for folder in search_dirs}
        if found is not None and roots & folders:
            reason = (
                f"its module {top!r} is found in {sorted(roots & folders)[0]}, beside the "
                "experiment or in the working directory, instead of the installed library"
            )
        else:
            given = [key for key in UNTRUSTED_FACTORY_ARGS if args.get(key)]
            if given:
                reason = f"model.factory_args.{given[0]} runs code from the model's files"
    if reason:
        raise ModelError(
            f"model.factory {spec!r} is not run: {reason}. If you trust this experiment file "
            f"and the code it names, {TRUST_HINT}"
        )


def _build_from_factory(
    spec: str,
    search_dirs: Iterable[Path],
    args: Mapping[str, Any] | None = None,
    trusted: bool = False,
) -> nn.Module:
    """Call the factory with ``args`` as keyword arguments; it must return a ``torch.nn.Module``.

    A factory outside :data:`LIBRARY_FACTORIES` needs ``trusted`` (see
    :func:`check_factory_trust`). A factory whose package lies in one of ``search_dirs`` is
    called with those folders on ``sys.path`` as when it was imported (for imports inside
    the factory); ``sys.path`` is restored after.
    """
    import torch

    search_dirs = tuple(search_dirs)
    check_factory_trust(spec, args or {}, search_dirs, trusted)
    # A library builder comes from the installed library: never from a file in search_dirs.
    factory, folders = _load_factory(spec, search_dirs if trusted else ())
    args = dict(args or {})
    try:
        with _on_path(folders):
            module = factory(**args)
    except Exception as exc:
        called = f"with model.factory_args {args}" if args else "with no arguments"
        hint = "" if args else " (set model.factory_args for the arguments it needs)"
        raise ModelError(
            f"model.factory {spec!r} failed when called {called}: "
            f"{type(exc).__name__}: {one_line(exc)}{hint}"
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"model.factory {spec!r} returned a {type(module).__name__}; it must return a "
            "torch.nn.Module"
        )
    return module


def load_state_dict_file(path: Path, *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict in ``path``: a plain one, or one under ``state_dict``/``model_state_dict``
    /``model`` in a checkpoint dict. Read with ``weights_only=True`` unless ``trusted``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist (model.weights)")
    obj: Any
    if model_file_kind(path) == "torchscript":
        try:
            obj = _jit_load(path).state_dict()
        except Exception as exc:
            raise ModelError(f"cannot read weights file {path}: {one_line(exc)}") from exc
    else:
        try:
            obj = _load_weights_only(path)
        except pickle.UnpicklingError as exc:
            if not trusted:
                raise ModelError(
                    f"weights file {path} holds pickled Python objects besides tensors: loading "
                    "it can run arbitrary code. Save only the weights "
                    "(torch.save(model.state_dict(), ...)), or if you trust this file "
                    f"{TRUST_HINT}"
                ) from exc
            obj = _unpickle_trusted(path, ())
        except Exception as exc:
            raise ModelError(f"cannot read weights file {path}: {one_line(exc)}") from exc
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        found = _few(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelError(
            f"weights file {path} does not hold a state_dict (parameter names → tensors); "
            f"found {found or 'nothing'}. Save it with torch.save(model.state_dict(), path)"
        )
    return dict(obj)


def _fits(keys: Iterable[str], expected: set[str]) -> bool:
    """The keys are the model's, except perhaps BatchNorm's ``num_batches_tracked`` counters
    (absent from checkpoints of old PyTorch versions, unused in eval mode)."""
    keys = set(keys)
    return keys <= expected and all(k.endswith(_OPTIONAL_SUFFIX) for k in expected - keys)


def _fit_keys(
    state: dict[str, torch.Tensor], expected: set[str]
) -> tuple[dict[str, torch.Tensor], str]:
    """Drop the prefix that wrappers put before every key when that makes the keys match
    the model's: ``module.`` (DataParallel, DDP), ``_orig_mod.`` (``torch.compile``),
    ``model.``/``net.``/… (a Lightning module's attribute), up to three nested. Only keys under
    the prefix are kept, so ``model.*`` is found next to ``model_ema.*`` or ``loss.*``.

    Returns:
        (the state_dict to load, the prefix dropped or ``""``).
    """
    if _fits(state, expected):
        return state, ""
    needed = len(expected) - sum(k.endswith(_OPTIONAL_SUFFIX) for k in expected)
    frontier = [("", state)]
    for _ in range(3):
        deeper = []
        for prefix, current in frontier:
            for first in sorted({k.split(".", 1)[0] for k in current if "." in k}):
                cut = len(first) + 1
                sub = {k[cut:]: v for k, v in current.items() if k.startswith(f"{first}.")}
                if _fits(sub, expected):
                    return sub, f"{prefix}{first}."
                if len(sub) >= needed:  # else no prefix below can fit either
                    deeper.append((f"{prefix}{first}.", sub))
        frontier = deeper
    return state, ""


def load_weights(
    module: nn.Module, path: Path, *, trusted: bool = False, factory: str = ""
) -> None:
    """Load the state_dict in ``path`` into ``module`` (strict), explaining any mismatch."""
    own = module.state_dict()
    stored = load_state_dict_file(path, trusted=trusted)
    state, prefix = _fit_keys(stored, set(own))
    ignored = sorted(k for k in stored if not k.startswith(prefix))
    if ignored:
        warnings.warn(
            f"weights file {path}: loaded the {len(state)} entries under {prefix!r}; ignored "
            f"the {len(ignored)} others ({_few(ignored, 3)})",
            TcavWarning,
            stacklevel=2,
        )
    if _fits(state, set(own)):  # fill in BatchNorm counters the file lacks
        state = {**{k: own[k] for k in set(own) - set(state)}, **state}
    built = f"the model built by {factory!r}" if factory else "the model"
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise ModelError(
            f"weights file {path} does not fit {built}: {'; '.join(parts)}. Check that "
            "model.factory builds the architecture these weights were saved from"
        )
    shapes = [
        f"{k!r}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if shapes:
        raise ModelError(
            f"weights file {path} does not fit {built}: shape mismatch for "
            f"{', '.join(shapes[:5])}{' …' if len(shapes) > 5 else ''}"
        )
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"weights file {path} does not fit {built}: {one_line(exc)}") from exc


# -- public entry points --------------------------------------------------------------------
TRANSFORMERS_FACTORY = "transformers"
"""``model.factory: transformers`` with ``model.path: FOLDER`` is ``model.huggingface``."""


def _huggingface_folders(spec: ModelSpec) -> tuple[str, str | None] | None:
    """``(model folder, tokenizer folder)`` of a HuggingFace model spec, else ``None``."""
    if spec.huggingface is not None:
        if spec.path is not None or spec.factory is not None:
            raise ConfigError(
                "model: set either model.huggingface or model.path / model.factory, not both"
            )
        return spec.huggingface.path, spec.huggingface.tokenizer
    if spec.factory == TRANSFORMERS_FACTORY:
        if spec.path is None:
            raise ConfigError(
                "model.factory: transformers loads the folder in model.path (what "
                "save_pretrained wrote): set model.path, or use model.huggingface: {path: ...}"
            )
        return str(spec.path), None
    return None


def check_spec(spec: ModelSpec) -> None:
    """Refuse a ``model`` section that sets neither or both ways of giving a model."""

    if spec.path is not None and spec.factory is not None:
        raise ConfigError(
            "model: set either model.path (a TorchScript or torch.save file) or model.factory "
            "('package.module:callable', with model.weights), not both"
        )
    if spec.path is None and spec.factory is None:
        raise ConfigError(
            "model: set model.path (a TorchScript or torch.save file) or model.factory "
            "('package.module:callable', with model.weights)"
        )
    if spec.weights is not None and spec.factory is None:
        raise ConfigError(
            "model.weights is used with model.factory (which builds the architecture); with "
            "model.path the file already holds the weights"
        )
    if spec.factory_args and spec.factory is None:
        raise ConfigError(
            "model.factory_args are the keyword arguments of model.factory; with model.path "
            "there is nothing to call: remove them or use model.factory"
        )


def adapter_for(
    module: nn.Module,
    *,
    logits_layer: str | None = None,
    output: int | str | None = None,
    device: str | torch.device = "auto",
    pooling: Pooling = "none",
) -> ModelAdapter:
    """The adapter that suits ``module``: TorchScript modules cannot run forward hooks."""
    adapter: ModelAdapter
    import torch

    from tcavkit.models.torchscript import ScriptedSequentialModel

    if isinstance(module, torch.jit.ScriptModule):
        adapter = ScriptedSequentialModel(
            module, logits_layer=logits_layer, output=output, device=device
        )
    elif type(module).__module__.split(".")[0] == "keras":  # a Keras 3 model (torch backend)
        from tcavkit.models.keras import KerasModel

        adapter = KerasModel(module, logits_layer=logits_layer, output=output, device=device)
    else:
        adapter = TorchModel(module, logits_layer=logits_layer, output=output, device=device)
    adapter.set_pooling(pooling)
    return adapter


def load_model(
    spec: ModelSpec,
    *,
    device: str | torch.device = "auto",
    trust_model_file: bool = False,
    base_dir: Path | None = None,
) -> ModelAdapter:
    """Build the adapter for the ``model`` section of an experiment.

    Args:
        spec: the model section; paths should already be absolute (see ``resolve_paths``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``…
        trust_model_file: allow unpickling a ``torch.save``\\ d module, a pickled weights
            file or a Keras file with ``Lambda`` layers (runs code from the file). Only the
            caller decides this: the experiment file cannot (``model.trusted`` is refused).
        base_dir: the experiment file's folder; with the working directory it is searched
            for ``model.factory`` modules (and classes of trusted pickles) that are not
            importable otherwise.

    Raises:
        ConfigError: neither or both of ``path`` and ``factory``; ``weights`` without factory.
        ModelError: the model cannot be loaded (missing file, untrusted pickle, bad factory,
            weights that do not fit).
        LayerError: ``spec.logits`` is not a layer of the model.
    """
    folders = _huggingface_folders(spec)
    if folders is not None:
        from tcavkit.models.huggingface import load_huggingface  # imports transformers

        adapter: ModelAdapter = load_huggingface(
            *folders,
            max_length=spec.max_length,
            logits_layer=spec.logits,
            output=spec.output,
            device=device,
        )
        adapter.set_pooling(spec.pooling)
        return adapter
    check_spec(spec)
    if spec.max_length is not None:
        raise ConfigError(
            "model.max_length is the tokenizer's limit of a text model: remove it, or load a "
            "HuggingFace model with model.huggingface"
        )
    adapter = _load_adapter(spec, device, bool(trust_model_file), base_dir)
    adapter.set_pooling(spec.pooling)
    return adapter


def _load_adapter(
    spec: ModelSpec, device: str | torch.device, trusted: bool, base_dir: Path | None
) -> ModelAdapter:
    """The adapter of a model file or factory (not yet pooled)."""
    search_dirs = tuple(d for d in (base_dir, Path.cwd()) if d is not None)
    if spec.path is not None and Path(spec.path).suffix.lower() in KERAS_SUFFIXES:
        from tcavkit.models.keras import load_keras  # imports Keras only when needed

        return load_keras(
            Path(spec.path),
            logits_layer=spec.logits,
            output=spec.output,
            device=device,
            trusted=trusted,
        )
    if spec.path is not None and Path(spec.path).suffix.lower() == ".onnx":
        from tcavkit.models.onnx import load_onnx  # imports onnx2torch only when needed

        return load_onnx(
            Path(spec.path), logits_layer=spec.logits, output=spec.output, device=device
        )
    if spec.path is not None:
        module = _load_model_file(Path(spec.path), trusted, search_dirs)
    else:
        assert spec.factory is not None
        module = _build_from_factory(spec.factory, search_dirs, spec.factory_args, trusted)
        if spec.weights is not None:
            load_weights(module, Path(spec.weights), trusted=trusted, factory=spec.factory)
    return adapter_for(module, logits_layer=spec.logits, output=spec.output, device=device)


def load_labels(labels: list[str] | str | Path | None) -> list[str] | None:
    """Class labels: a list as given, or a text file with one label per line (blank lines
    ignored, surrounding whitespace stripped); ``None`` when no labels are given."""
    if labels is None:
        return None
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise ConfigError(
                f"labels file {path} does not exist (model.labels): give a text file with one "
                "class label per line, or a list of labels"
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read labels file {path}: {one_line(exc)}") from exc
        result = [line.strip() for line in text.splitlines() if line.strip()]
        if not result:
            raise ConfigError(f"labels file {path} holds no labels (model.labels)")
        return result
    return [str(label) for label in labels]


def describe(spec: ModelSpec) -> str:
    """A short description of the model for reports, e.g. ``TorchScript file models/x.pt``."""
    folders = _huggingface_folders(spec)
    if folders is not None:
        return f"HuggingFace model {folders[0]}"
    if spec.path is not None:
        path = Path(spec.path)
        if path.suffix.lower() in KERAS_SUFFIXES:
            return f"Keras file {spec.path}"
        if path.suffix.lower() == ".onnx":
            return f"ONNX file {spec.path}"
        kind = model_file_kind(path) if path.is_file() else "unknown"
        what = {
            "torchscript": "TorchScript file",
            "pickle": "PyTorch file",
            "unknown": "model file",
        }[kind]
        return f"{what} {spec.path}"
    if spec.factory is not None:
        if spec.weights is not None:
            return f"{spec.factory}() with weights {spec.weights}"
        return f"{spec.factory}() (weights as built)"
    return "no model"
