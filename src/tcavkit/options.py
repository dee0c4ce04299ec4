"""The settings groups of an experiment, each defined and validated once.

Every group is a frozen dataclass that checks itself when it is made, so a bad value fails
before any model runs, whether it comes from Python or from the experiment file (whose
sections, in :mod:`tcavkit.config`, are these same classes). Each list of choices is
written here once, as a ``Literal`` type, and the tuples beside it are read from that type.

This module imports nothing heavy: the command line reads it before it parses anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, get_args, get_type_hints

from tcavkit.errors import ConfigError

CavMethod = Literal["hinge", "logistic", "mean-difference"]
CavMethodAlias = Literal["sgd"]
CavMethodName = Literal[CavMethod, CavMethodAlias]  # every accepted name
GradientName = Literal["logit", "log_softmax"]
TestName = Literal[
    "auto", "concept-resample", "concept-t", "concept-rank", "ttest", "welch", "one-sample"
]
StatisticName = Literal["effect", "tcav_score", "magnitude"]
CorrectionName = Literal["holm", "bonferroni", "bh", "none"]
CacheDtype = Literal["float32", "float16"]
DiscoverMethod = Literal["ace", "nmf"]
PoolingName = Literal["none", "cls", "mean", "last"]
ExecutorName = Literal["local", "ray"]

CAV_METHODS: tuple[str, ...] = get_args(CavMethod)
CAV_METHOD_ALIASES: dict[str, str] = dict.fromkeys(get_args(CavMethodAlias), "hinge")
"""Other accepted names of a CAV method → the method (``sgd`` names the hinge learner)."""
GRADIENTS: tuple[str, ...] = get_args(GradientName)
TESTS: tuple[str, ...] = get_args(TestName)
STATISTICS: tuple[str, ...] = get_args(StatisticName)
CORRECTIONS: tuple[str, ...] = get_args(CorrectionName)
CACHE_DTYPES: tuple[str, ...] = get_args(CacheDtype)
DISCOVER_METHODS: tuple[str, ...] = get_args(DiscoverMethod)
POOLINGS: tuple[str, ...] = get_args(PoolingName)
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)

# Unknown keys in an experiment file's section are errors (pydantic reads this attribute of
# a standard dataclass; a plain dict, so that this module needs no pydantic import).
_FORBID_EXTRA = {"extra": "forbid"}


def check_choice(
    value: object, choices: tuple[str, ...], key: str, aliases: dict[str, str] | None = None
) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``value`` is one of ``choices``
    (the message also lists ``aliases``, other accepted names → the choice they stand for)."""
    if value not in choices:
        also = "".join(f"; {a!r} is accepted for {c!r}" for a, c in (aliases or {}).items())
        raise ConfigError(f"unknown {key} {value!r}; choose one of {', '.join(choices)}{also}")


def takes_numbers(annotation: object) -> bool:
    """Whether a field annotation takes numbers (``int``, ``float``, optional or in a tuple)."""
    if annotation in (int, float):
        return True
    return any(takes_numbers(arg) for arg in get_args(annotation) if arg is not Ellipsis)


def reject_bools(values: dict[str, object], group: type, key: str) -> None:
    """Raise a :class:`ConfigError` for ``True``/``False`` given to a numeric field of the
    settings group ``group`` (Python and pydantic would both take ``True`` as 1)."""
    types = get_type_hints(group)
    for name, value in values.items():
        given = value if isinstance(value, (list, tuple)) else [value]
        if takes_numbers(types.get(name)) and any(isinstance(v, bool) for v in given):
            raise ConfigError(f"{key}.{name}: expected a number, got {json.dumps(value)}")


def check_open_unit(value: object, key: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``value`` is a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"{key} must be a number between 0 and 1 (exclusive), got {value!r}")


@dataclass(frozen=True)
class Preprocessing:
    """How images become model inputs (the experiment file's ``model.input``).

    Attributes:
        size: ``(height, width)`` the images are resized to, or ``None`` to keep the size.
        value_range: pixel values are scaled linearly from [0, 255] to this range.
        mean: per-channel mean subtracted after scaling (``None``: no normalisation).
        std: per-channel standard deviation divided by after subtracting ``mean``.
        channels_last: produce ``(n, H, W, C)`` instead of ``(n, C, H, W)``.
    """

    __pydantic_config__ = _FORBID_EXTRA

    size: tuple[int, int] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        reject_bools(asdict(self), Preprocessing, "model.input")
        if self.size is not None:
            check_input_size(self.size, "model.input.size")

    def fingerprint(self) -> str:
        """A canonical string of every field; part of the activation cache key."""
        return json.dumps(asdict(self), sort_keys=True)


MAX_IMAGE_SIDE = 4096
"""The largest image side, in pixels, that images are resized to (``model.input.size``) or that
``tcavkit layers --size`` runs a model on: one 4096 x 4096 RGB image is 200 MB of float32
before the model's own activations."""


def check_input_size(size: object, key: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``size`` is ``(height, width)``,
    two whole numbers from 1 to :data:`MAX_IMAGE_SIDE`."""
    sides = list(size) if isinstance(size, (list, tuple)) else [size]
    if len(sides) != 2 or not all(
        isinstance(side, int) and not isinstance(side, bool) and 1 <= side <= MAX_IMAGE_SIDE
        for side in sides
    ):
        shown = " ".join(str(side) for side in sides)
        raise ConfigError(
            f"{key} is the input's height and width, two whole numbers from 1 to "
            f"{MAX_IMAGE_SIDE} pixels, got {shown}"
        )


def check_example_limits(maximum: int | None, minimum: int, lowest_min: int = 0) -> None:
    """Raise a :class:`ConfigError` for impossible per-set example limits."""
    if maximum is not None and maximum < 1:
        raise ConfigError(f"examples.max must be at least 1, got {maximum}")
    if minimum < lowest_min:
        raise ConfigError(f"examples.min must be at least {lowest_min}, got {minimum}")
    if maximum is not None and maximum < minimum:
        raise ConfigError(
            f"examples.max ({maximum}) is below examples.min ({minimum}); raise examples.max "
            "or lower examples.min"
        )


@dataclass(frozen=True)
class ExampleLimits:
    """How many examples each set of an experiment uses (the experiment file's ``examples``).

    Attributes:
        max: use at most this many examples per set (``None``: all).
        min: a set with fewer usable examples is an error; at least 2, since a CAV needs
            two examples of each class.
    """

    __pydantic_config__ = _FORBID_EXTRA

    max: int | None = 100
    min: int = 10

    def __post_init__(self) -> None:
        reject_bools(asdict(self), ExampleLimits, "examples")
        check_example_limits(self.max, self.min, lowest_min=2)


@dataclass(frozen=True)
class CavOptions:
    """How CAVs are trained (the experiment file's ``cav``).

    Attributes:
        method: ``mean-difference`` (default): the difference of the two sets' mean
            activations, in closed form (FastCAV); it has the most power of the three and
            keeps it when some concept images are off-concept (README, "Statistics").
            ``hinge``: the L2-regularised hinge-loss linear SVM, the objective of
            tensorflow/tcav's default CAV (scikit-learn's ``SGDClassifier(loss="hinge")``),
            solved exactly (interior point) instead of by stochastic passes; ``sgd`` is
            accepted as another name for it and becomes ``hinge`` when the options are
            made. ``logistic``: L2 logistic regression. See :mod:`tcavkit.cav.learners`.
        alpha: L2 regularisation strength (the objective is ``alpha/2 |w|² + mean loss``,
            as scikit-learn's ``SGDClassifier(alpha)`` and ``LogisticRegression(C=1 /
            (alpha * n_train))``). Default 0.01.
        test_fraction: share of each class held out to measure accuracy. Default 1/3.
        max_iter: cap on the solver's iterations for ``hinge`` and ``logistic``, from 1 to
            :data:`MAX_SOLVER_ITERATIONS` (both converge in far fewer: the interior-point
            hinge solver in 10-20, Newton's method for the logistic loss in under 30).
    """

    __pydantic_config__ = _FORBID_EXTRA

    method: CavMethodName = "mean-difference"
    alpha: float = 0.01
    test_fraction: float = 0.33
    max_iter: int = 100

    def __post_init__(self) -> None:
        reject_bools(asdict(self), CavOptions, "cav")
        if isinstance(self.method, str) and self.method in CAV_METHOD_ALIASES:
            object.__setattr__(self, "method", CAV_METHOD_ALIASES[self.method])
        check_choice(self.method, CAV_METHODS, "cav.method", CAV_METHOD_ALIASES)
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"cav.test_fraction must be in [0, 1), got {self.test_fraction}")
        if not self.alpha > 0:
            raise ConfigError(f"cav.alpha must be positive, got {self.alpha}")
        if not 1 <= self.max_iter <= MAX_SOLVER_ITERATIONS:
            raise ConfigError(
                f"cav.max_iter must be from 1 to {MAX_SOLVER_ITERATIONS}, got {self.max_iter}"
            )


MAX_SOLVER_ITERATIONS = 100


@dataclass(frozen=True)
class StatsOptions:
    """Significance testing (the experiment file's ``stats``; see :mod:`tcavkit.stats`).

    Attributes:
        test: ``auto`` (default: ``concept-resample`` where the tested effect is linear
            in the examples, i.e. mean-difference CAVs and ``statistic: effect``, else
            ``concept-t``), ``concept-resample``, ``concept-t``, ``concept-rank``, or a
            classic per-run test (``ttest``, ``welch``, ``one-sample``).
        alpha: significance level after correction.
        correction: multiple-testing correction over every summary row.
        confidence: level of the interval of the mean TCAV score.
        statistic: the per-run column the concept-level tests compare.
    """

    __pydantic_config__ = _FORBID_EXTRA

    test: TestName = "auto"
    alpha: float = 0.05
    correction: CorrectionName = "holm"
    confidence: float = 0.95
    statistic: StatisticName = "effect"

    def __post_init__(self) -> None:
        reject_bools(asdict(self), StatsOptions, "stats")
        check_choice(self.test, TESTS, "stats.test")
        check_choice(self.correction, CORRECTIONS, "stats.correction")
        check_choice(self.statistic, STATISTICS, "stats.statistic")
        check_open_unit(self.alpha, "stats.alpha")
        check_open_unit(self.confidence, "stats.confidence")


@dataclass(frozen=True)
class DiscoverOptions:
    """Automatic concept discovery, ACE- or CRAFT-style (the experiment file's ``discover``;
    see :mod:`tcavkit.discover`).

    Attributes:
        targets: the classes whose concepts are discovered (``None``: every target of the
            experiment).
        images: segment at most this many images of each target (the first ones in the
            seeded order of the target's folder).
        segments: SLIC superpixel counts, one segmentation (resolution) per count
            (``ace``).
        compactness: SLIC's balance of colour against space (higher: squarer segments).
        min_area: a segment smaller than this share of its image is dropped.
        crops: square crops across the image's shorter side (``nmf``), one grid (scale) per
            count: ``n`` makes a grid of crops of side ``shorter side // n`` (``n`` by ``n``
            on a square image).
        clusters: k-means clusters (``ace``) or NMF components (``nmf``) per target and
            layer.
        min_images: a concept must come from at least this many different images.
        max_patches: patches kept per concept, those nearest the cluster's centre
            (``ace``) or with the largest coefficients of the component (``nmf``).
        method: ``ace`` (superpixels and k-means) or ``nmf`` (CRAFT: square crops and
            non-negative matrix factorisation of post-ReLU activations).
    """

    __pydantic_config__ = _FORBID_EXTRA

    targets: tuple[str, ...] | None = None
    images: int = 40
    segments: tuple[int, ...] = (15, 50, 80)
    compactness: float = 20.0
    min_area: float = 0.001
    crops: tuple[int, ...] = (3, 5)
    clusters: int = 25
    min_images: int = 5
    max_patches: int = 40
    method: DiscoverMethod = "ace"

    def __post_init__(self) -> None:
        reject_bools(asdict(self), DiscoverOptions, "discover")
        check_choice(self.method, DISCOVER_METHODS, "discover.method")
        if not self.segments:
            raise ConfigError("discover.segments must list at least one segment count")
        for count in self.segments:
            if not isinstance(count, int) or count < 2:
                raise ConfigError(
                    f"discover.segments must be whole numbers of at least 2, got {count!r}"
                )
        object.__setattr__(self, "segments", tuple(self.segments))
        if not self.crops:
            raise ConfigError("discover.crops must list at least one crop count")
        for count in self.crops:
            if not isinstance(count, int) or count < 1:
                raise ConfigError(
                    f"discover.crops must be whole numbers of at least 1, got {count!r}"
                )
        object.__setattr__(self, "crops", tuple(self.crops))
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))
        for key, low in (("images", 2), ("clusters", 2), ("min_images", 2), ("max_patches", 2)):
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"discover.{key} must be a whole number of at least {low}, got {value!r}"
                )
        if self.min_images > self.images:
            raise ConfigError(
                f"discover.min_images ({self.min_images}) is above discover.images "
                f"({self.images}): no concept could pass the filter; lower min_images or "
                "raise images"
            )
        if not self.compactness > 0:
            raise ConfigError(f"discover.compactness must be positive, got {self.compactness}")
        check_open_unit(self.min_area, "discover.min_area")

    def fingerprint(self) -> str:
        """The segmentation (``ace``) or crop (``nmf``) settings, canonically: part of the
        discovery cache keys."""
        if self.method == "nmf":
            return json.dumps({"method": "nmf", "crops": list(self.crops)}, sort_keys=True)
        return json.dumps(
            {
                "segments": list(self.segments),
                "compactness": float(self.compactness),
                "min_area": float(self.min_area),
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class RayOptions:
    """Where and how a run with ``executor: ray`` spreads its work (the experiment file's
    ``ray``; see :mod:`tcavkit.pipeline.ray_executor`).

    Attributes:
        address: the Ray cluster to join: ``auto`` (the cluster this machine belongs to,
            started by ``ray start``), ``HOST:PORT`` of its head, ``ray://HOST:10001``;
            ``None`` (default): a Ray instance started on this machine for the run.
        workers: model actors for the activation and gradient passes (``None``: as many as
            the cluster's GPUs, or CPUs when ``gpus_per_worker`` is 0, allow).
        gpus_per_worker: GPUs each model actor and each CAV task holds (0: CPU only;
            fractions share a GPU).
        cpus_per_worker: CPUs each model actor and each CAV task holds (also its number of
            torch threads, rounded down, at least 1).
    """

    __pydantic_config__ = _FORBID_EXTRA

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        reject_bools(asdict(self), RayOptions, "ray")
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ConfigError(
                f"ray.address must be auto, HOST:PORT or ray://HOST:PORT, got {self.address!r}"
            )
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError(
                f"ray.workers must be a whole number of at least 1, got {self.workers!r}"
            )
        if not self.gpus_per_worker >= 0:
            raise ConfigError(f"ray.gpus_per_worker must be 0 or more, got {self.gpus_per_worker}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"ray.cpus_per_worker must be positive, got {self.cpus_per_worker}")
