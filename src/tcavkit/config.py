"""The experiment file: a typed, validated description of one TCAV experiment.

Loaded from YAML with ``yaml.safe_load``; unknown keys are errors that name the key and
suggest the closest valid one; relative paths are resolved against the YAML file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from tcavkit.errors import ConfigError
from tcavkit.options import (
    CacheDtype,
    CavOptions,
    DiscoverOptions,
    ExampleLimits,
    ExecutorName,
    GradientName,
    PoolingName,
    Preprocessing,
    RayOptions,
    StatsOptions,
    reject_bools,
)

TRUST_ENV_VAR = "TCAVKIT_TRUST_MODEL_FILE"
"""The environment variable that, set to ``1``, is ``--trust-model-file`` for every command."""

TRUST_IN_FILE = (
    "model.trusted is not read from the experiment file: whether to load a pickled model (or "
    "a Keras Lambda layer), which runs code from the file, is decided by the person running "
    f"the command: pass --trust-model-file or set {TRUST_ENV_VAR}=1"
)


def check_folder_name(name: object, key: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``name`` is a plain folder name
    (no path separator, not ``.`` or ``..``, not absolute): every target, concept and random
    set of an experiment file is a sub-folder of ``data:``."""
    text = str(name)
    plain = (
        isinstance(name, str)
        and text not in ("", ".", "..")
        and "\0" not in text
        and PurePosixPath(text).name == text
        and PureWindowsPath(text).name == text
    )
    if not plain:
        raise ConfigError(
            f"{key}: {text!r} is not a folder name: each target, concept and random set is a "
            "sub-folder of the data folder (data:), named without '/', '\\' or '..'; move or "
            "link the folder into the data folder and give its name"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HuggingFaceSpec(_Strict):
    """A HuggingFace ``transformers`` sequence classifier saved with ``save_pretrained``.

    ``path`` (and ``tokenizer``, default: ``path``) is a local folder; a hub name is used
    only when a local copy of it exists (nothing is downloaded).
    """

    path: str
    tokenizer: str | None = None


class ModelSpec(_Strict):
    """Which model, which layers, which output is the logits; for text models the
    tokenizer's ``max_length``, for tabular models the feature ``columns``, and how
    sequence outputs are pooled."""

    path: Path | None = None
    factory: str | None = None
    factory_args: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = None
    huggingface: HuggingFaceSpec | None = None
    layers: list[str] = Field(min_length=1)
    logits: str | None = None
    output: int | str | None = None
    labels: list[str] | Path | None = None
    input: Preprocessing = Preprocessing()
    pooling: PoolingName | dict[str, PoolingName] = "none"
    max_length: StrictInt | None = Field(None, ge=2)
    columns: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _checks(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "trusted" in data:
                raise ConfigError(TRUST_IN_FILE)
            _reject_raw_bools(data.get("input"), Preprocessing, "model.input")
        return data


class RandomSpec(_Strict):
    """The random (negative) sets: a glob over the data folder or a list of names."""

    sets: str | list[str] = "random500_*"
    runs: StrictInt = Field(20, ge=1)

    @field_validator("sets")
    @classmethod
    def _folder_names(cls, sets: str | list[str]) -> str | list[str]:
        if isinstance(sets, list):
            for name in sets:
                check_folder_name(name, "random.sets")
        return sets


class ExperimentConfig(_Strict):
    """One TCAV experiment, as in the YAML file. The sections ``model.input``,
    ``examples``, ``cav``, ``stats``, ``discover`` and ``ray`` are the settings groups of
    :mod:`tcavkit.options`, which validate themselves."""

    model: ModelSpec
    data: Path
    targets: list[str] = Field(min_length=1)
    concepts: list[str] = Field(default_factory=list)
    random: RandomSpec = RandomSpec()
    relative: list[tuple[str, str]] = Field(default_factory=list)
    examples: ExampleLimits = ExampleLimits()
    cav: CavOptions = CavOptions()
    stats: StatsOptions = StatsOptions()
    discover: DiscoverOptions = DiscoverOptions()
    executor: ExecutorName = "local"
    ray: RayOptions = RayOptions()
    gradient: GradientName = "logit"
    seed: StrictInt = 0
    batch_size: StrictInt = Field(32, ge=1)
    device: str = "auto"
    cache: Path | None = Path(".tcavkit-cache")
    cache_dtype: CacheDtype = "float32"
    output: Path = Path("results")

    @model_validator(mode="before")
    @classmethod
    def _no_bools_in_settings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, section in (
                ("examples", ExampleLimits),
                ("cav", CavOptions),
                ("stats", StatsOptions),
                ("discover", DiscoverOptions),
                ("ray", RayOptions),
            ):
                _reject_raw_bools(data.get(key), section, key)
        return data

    @field_validator("targets", "concepts")
    @classmethod
    def _folder_names(cls, names: list[str], info: Any) -> list[str]:
        for name in names:
            check_folder_name(name, info.field_name)
        return names


def _reject_raw_bools(raw: Any, section: type, key: str) -> None:
    """The settings groups refuse ``True`` for a number themselves, but pydantic turns a
    YAML ``true`` into 1 before they see it: check the raw mapping with the same rule."""
    if isinstance(raw, dict):
        reject_bools(raw, section, key)


def _field_types(section: Any) -> dict[str, Any]:
    """Field name → annotation of a config section (a pydantic model or a dataclass)."""
    if isinstance(section, type) and issubclass(section, BaseModel):
        return {name: field.annotation for name, field in section.model_fields.items()}
    if dataclasses.is_dataclass(section):
        return typing.get_type_hints(section)
    return {}


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (a pydantic error location) of ``model``."""
    current: Any = model
    for part in loc[:-1]:
        types = _field_types(current)
        if not isinstance(part, str) or part not in types:
            return []
        current = types[part]
    return list(_field_types(current))


def _explain(exc: ValidationError, source: str) -> ConfigError:
    """One line per problem, naming the key and, for unknown keys, the closest valid one."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            valid = _valid_keys(ExperimentConfig, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
            lines.append(f"unknown key {key!r}{hint}")
        elif err["type"] == "missing":
            lines.append(f"missing required key {key!r}")
        else:
            value = err.get("input")
            got = ""
            if value is None or isinstance(value, (bool, int, float, str)):
                got = f", got {json.dumps(value)}"
            lines.append(f"{key}: {err['msg']}{got}")
    return ConfigError(f"{source}: " + "; ".join(lines))


def parse_config(raw: dict[str, Any], base_dir: Path, source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping and resolve relative paths against ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc, source) from None
    except ConfigError as exc:  # a settings group's own check
        raise ConfigError(f"{source}: {exc}") from None
    return resolve_paths(config, base_dir)


def resolve_paths(config: ExperimentConfig, base_dir: Path) -> ExperimentConfig:
    """Make every path in ``config`` absolute, relative ones taken from ``base_dir``."""

    def fix(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = Path(path).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()

    def local(name: str | None) -> str | None:
        """A HuggingFace folder made absolute when it exists there; a hub name as given."""
        if name is None:
            return None
        path = Path(name).expanduser()
        if not path.is_absolute() and (base_dir / path).is_dir():
            return str((base_dir / path).resolve())
        return str(path) if path.is_absolute() else name

    labels = config.model.labels
    hf = config.model.huggingface
    model = config.model.model_copy(
        update={
            "path": fix(config.model.path),
            "weights": fix(config.model.weights),
            "labels": fix(labels) if isinstance(labels, Path) else labels,
            "huggingface": None
            if hf is None
            else hf.model_copy(update={"path": local(hf.path), "tokenizer": local(hf.tokenizer)}),
        }
    )
    return config.model_copy(
        update={
            "model": model,
            "data": fix(config.data),
            "cache": fix(config.cache),
            "output": fix(config.output),
        }
    )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--set {item!r}: expected key.sub=value, e.g. --set cav.method=hinge"
            )
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    raw = apply_overrides(raw, overrides or [])
    return parse_config(raw, path.parent.resolve(), source=str(path))
