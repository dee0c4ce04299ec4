"""Automatic concept discovery (ACE, Ghorbani et al., NeurIPS 2019; CRAFT-style NMF, Fel et
al., CVPR 2023, as ``method: nmf``): ``tcavkit discover``.

- :mod:`~tcavkit.discover.segments`: SLIC superpixels at several resolutions, de-duplication,
  square crops (``nmf``), patches (pure; needs scikit-image, ``pip install 'tcavkit[discover]'``);
- :mod:`~tcavkit.discover.clusters`: k-means (or NMF) of patch activations and ACE's filter
  (pure);
- :mod:`~tcavkit.discover.run`: the whole job (:func:`discover`): patches through the
  model and the cache, clusters written as concept folders, tested by the normal experiment.
"""

from tcavkit.discover.run import DiscoveredConcept, DiscoveryOutcome, Patch, discover

__all__ = ["DiscoveredConcept", "DiscoveryOutcome", "Patch", "discover"]
