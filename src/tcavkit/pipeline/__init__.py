"""The experiment pipeline, one room per stage of a run:

- :mod:`~tcavkit.pipeline.plan`: which CAVs are trained and which rows they score (pure);
- :mod:`~tcavkit.pipeline.keys`: the content keys of cached activations, gradients, CAVs;
- :mod:`~tcavkit.pipeline.context`: one run's state;
- :mod:`~tcavkit.pipeline.passes`: the model passes (activations, gradients) via the cache;
- :mod:`~tcavkit.pipeline.training`: CAVs trained in batches and scored, the runs table;
- :mod:`~tcavkit.pipeline.experiment`: the :class:`Experiment` facade.
"""

from tcavkit.pipeline.experiment import Experiment

__all__ = ["Experiment"]
