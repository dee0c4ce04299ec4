"""The experiment file: a typed, validated description of one TCAV experiment.

Loaded from YAML with yaml's safe loader (:func:`read_yaml`: a key given twice in one
mapping is refused, and so is a file that expands, YAML aliases counted at each use, to
more than :data:`MAX_YAML_VALUES` values); unknown keys are errors that name the key and
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

from tcavkit.errors import ConfigError, one_line
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
    "a Keras Lambda layer, or call a model.factory outside the model libraries), which runs "
    "code the file chose, is decided by the person running the command: pass "
    f"--trust-model-file or set {TRUST_ENV_VAR}=1"
)


MAX_YAML_VALUES = 1_000_000
"""The most values (keys, values, list items) an experiment file or a ``--set`` value may
hold, each use of a YAML alias counted again: a few lines of aliases can otherwise stand for
billions of values (an "alias bomb") that expand in memory when the settings are copied."""

_YAML_MERGE = "tag:yaml.org,2002:merge"


_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""yaml's safe loader: libyaml's where it is installed (the same documents, faster)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_keys(loader: Any, node: yaml.MappingNode, source: str) -> None:
    """Refuse a key given twice in one mapping (yaml would keep the last one silently).
    Keys merged in with ``<<: *base`` may be given again: YAML means them as defaults."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _YAML_MERGE or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # not hashable: yaml refuses it when constructing
            continue
        if first is None:
            seen[key] = line
        else:
            where = f"line {line}" if first == line else f"lines {first} and {line}"
            raise ConfigError(
                f"{source}: key {key!r} is given twice in one mapping ({where}); only one "
                "can hold: remove the other"
            )


def _check_document(loader: Any, root: yaml.Node, source: str) -> None:
    """Before anything is built: refuse a key given twice in a mapping, a document that
    holds more than :data:`MAX_YAML_VALUES` values once its aliases are expanded (counted on
    the node graph, each shared node once, so nothing is expanded), and an alias that refers
    to a value containing it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(
                1 if type(child) is yaml.ScalarNode else sizes[id(child)]
                for child in _children(node)
            )
            if sizes[key] > MAX_YAML_VALUES:
                raise ConfigError(
                    f"{source}: holds more than {MAX_YAML_VALUES:,} values (each use of a "
                    "YAML alias *name counting its whole value): an experiment names far "
                    "fewer; write the values out rather than through nested aliases"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ConfigError(
                f"{source}: a YAML alias (*name) refers to a value that contains it: "
                "write the value out"
            )
        if isinstance(node, yaml.MappingNode):
            _check_keys(loader, node, source)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend(
            (child, False)
            for child in _children(node)
            if type(child) is not yaml.ScalarNode and id(child) not in sizes
        )


def read_yaml(text: str, source: str, hint: str = "") -> Any:
    """The value of the YAML document ``text``, read with yaml's safe loader; ``None`` for an
    empty document.

    Raises:
        ConfigError: naming ``source``: not valid YAML (``hint`` added), a key given twice
            in one mapping, more than :data:`MAX_YAML_VALUES` values once aliases are
            expanded, or nested too deeply.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_document(loader, node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {one_line(exc)}{hint}") from None
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deeply to read") from None
    finally:
        loader.dispose()


def check_folder_name(name: object, key: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``name`` is a plain folder name
    (no path separator, not ``.`` or ``..``, not absolute): every target, concept and random
    set of an experiment file is a sub-folder of ``data:``."""
    text = str(name)
    plain = (
        isinstance(name, str)
        and text not in ("", ".", "..")
        and not any(c in text for c in "/\\\0")
        and (  # the path parsers only where a Windows drive could hide (fast for 10**5 names)
            ":" not in text
            or (PurePosixPath(text).name == text and PureWindowsPath(text).name == text)
        )
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
        raise ConfigError(f"{source}: {_not_a_mapping(raw)}")
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
    if overrides and not isinstance(raw, dict):
        raise ConfigError(f"--set {overrides[0]!r}: {_not_a_mapping(raw)}")
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
        node[parts[-1]] = read_yaml(
            value, f"--set {item!r}", hint="; quote a text value: --set 'key=\"text\"'"
        )
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment YAML file."""
    path = Path(path)
    raw = read_experiment_file(path)
    raw = apply_overrides(raw, overrides or [])
    return parse_config(raw, path.parent.resolve(), source=str(path))


def read_experiment_file(path: Path) -> dict[str, Any]:
    """The raw mapping of an experiment file (empty for an empty file).

    Raises:
        ConfigError: naming ``path`` and what to give instead: missing, a folder, a binary
            or non-UTF-8 file, not valid YAML (see :func:`read_yaml`), or a top level that
            is not a mapping of keys.
    """
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
        hint = f" (it holds {', '.join(found[:3])})" if found else ""
        raise ConfigError(
            f"{path} is a folder, not an experiment file: give the experiment's YAML file{hint}"
        )
    if not path.is_file():
        raise ConfigError(f"experiment file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if b"\0" in data:
            raise ConfigError(
                f"{path} is a binary file, not an experiment file: give the experiment's YAML "
                "file (a model file goes in its model.path)"
            ) from None
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}): "
            "save the experiment file as UTF-8"
        ) from None
    raw = read_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {_not_a_mapping(raw)}")
    return raw


def _not_a_mapping(raw: Any) -> str:
    kind = "a list" if isinstance(raw, list) else f"a single value ({one_line(repr(raw), 40)})"
    return (
        f"the experiment file's top level is {kind}, not a mapping of keys: write one "
        "'key: value' per line (model:, data:, targets:, ...)"
    )
