"""Clustering patch activations into concepts, and ACE's filter (pure).

Patches are clustered per layer with k-means (seeded, several initialisations). A cluster
becomes a concept only when it comes from enough different images (``min_images``) and
passes ACE's filter, which rejects a cluster made of one image's many patches: with ``n``
patches from ``u`` different images out of ``N`` segmented images, it is kept when
``u > n/2`` (highly common), or ``u > n/4`` and ``u > N/4`` (mildly common and mildly
populated), or ``u > n/10`` and ``u > N/2`` (present in most images). A concept keeps the
``max_patches`` patches nearest its centre.

``method: nmf`` (CRAFT, Fel et al. CVPR 2023) factorises the patch activations instead,
``A ≈ U W`` with ``U`` ``(n, k)`` and ``W`` ``(k, d)`` non-negative (:func:`nmf`): each patch
belongs to the component that contributes most to it, the largest ``U[i, j] * |W[j]|`` (the
coefficient in the component's own units: NMF's split of scale between ``U`` and ``W`` is
arbitrary); none when its row is all zero. The same filter and :func:`keep_clusters` apply,
with "nearest the centre" read as "largest contribution of its component".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from tcavkit.errors import ConfigError


@dataclass(frozen=True)
class Cluster:
    """One kept cluster.

    Attributes:
        label: the k-means label.
        members: indices of every patch in the cluster.
        nearest: indices of the kept patches, nearest the centre first.
        n_images: different source images among the cluster's patches.
    """

    label: int
    members: np.ndarray
    nearest: np.ndarray
    n_images: int


def kmeans(acts: np.ndarray, k: int, seed: int, n_init: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """k-means of ``acts`` ``(n, d)``.

    Returns:
        labels ``(n,)`` int, and each patch's distance to its own centre ``(n,)``.

    Raises:
        ConfigError: fewer patches than clusters.
    """
    from sklearn.cluster import KMeans

    if len(acts) < k:
        raise ConfigError(
            f"{len(acts)} patches cannot make {k} clusters: lower discover.clusters or raise "
            "discover.images or discover.segments"
        )
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    labels = model.fit_predict(np.asarray(acts, dtype=np.float64))
    distances = model.transform(np.asarray(acts, dtype=np.float64))[np.arange(len(acts)), labels]
    return labels.astype(np.int64), distances


def nmf(
    acts: np.ndarray, k: int, seed: int, layer: str, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative matrix factorisation of ``acts`` ``(n, d)`` into ``k`` components
    (scikit-learn's ``NMF``, seeded), each patch assigned to its strongest component (the
    one contributing most to it; see the module docstring).

    Returns:
        labels ``(n,)`` int (``-1`` for a patch with no weight on any component), and each
        patch's *negated* contribution from its own component ``(n,)``, so that, as with
        :func:`kmeans`'s distances, smaller is more typical.

    Raises:
        ConfigError: an activation is negative (NMF needs post-ReLU activations), or fewer
            patches than components.
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    acts = np.asarray(acts, dtype=np.float64)
    lowest = float(acts.min()) if acts.size else 0.0
    if lowest < 0:
        raise ConfigError(
            f"discover.method nmf: layer {layer!r} has negative activations (down to "
            f"{lowest:.3g}); NMF needs post-ReLU (non-negative) activations: choose a layer "
            "after a ReLU, or use method: ace"
        )
    if len(acts) < k:
        raise ConfigError(
            f"{len(acts)} patches cannot make {k} components: lower discover.clusters or "
            "raise discover.images or discover.crops"
        )
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        coefficients = model.fit_transform(acts)
    contributions = coefficients * np.linalg.norm(model.components_, axis=1)
    labels = np.argmax(contributions, axis=1).astype(np.int64)
    strength = contributions[np.arange(len(acts)), labels]
    labels[strength <= 0] = -1
    return labels, -strength


def acceptable(n_patches: int, n_images: int, n_discovery: int, min_images: int) -> bool:
    """ACE's filter for a cluster of ``n_patches`` from ``n_images`` different images, out of
    ``n_discovery`` segmented images (see the module docstring)."""
    if n_images < min_images:
        return False
    highly_common = n_images > 0.5 * n_patches
    mildly = n_images > 0.25 * n_patches and n_images > 0.25 * n_discovery
    widespread = n_images > 0.1 * n_patches and n_images > 0.5 * n_discovery
    return highly_common or mildly or widespread


def keep_clusters(
    labels: np.ndarray,
    distances: np.ndarray,
    sources: np.ndarray,
    *,
    n_discovery: int,
    min_images: int,
    max_patches: int,
) -> list[Cluster]:
    """The clusters that pass :func:`acceptable`, in label order, each with its
    ``max_patches`` patches nearest the centre (ties broken by patch index).

    Args:
        labels: ``(n,)`` cluster label of each patch (``-1``: in no cluster).
        distances: ``(n,)`` distance of each patch to its cluster's centre.
        sources: ``(n,)`` source image index of each patch.
    """
    out = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        n_images = len(np.unique(sources[members]))
        if not acceptable(len(members), n_images, n_discovery, min_images):
            continue
        order = np.lexsort((members, distances[members]))
        out.append(Cluster(int(label), members, members[order][:max_patches], n_images))
    return out
