"""Nuvla's own actions and distributions (PyPI ``nuvla-job-engine``), run by this engine.

The package is the optional ``nuvla`` extra; the executor and distributor load it with
``--nuvla-package`` (``JOB_NUVLA_PACKAGE``). Nothing here imports it before it is asked for.

- :mod:`.package`: finding the installed package and importing its registries once;
- :mod:`.actions`: its actions, added to an :class:`~nuvla_job.registry.ActionRegistry`
  after every other source (so an action of ours or yours of the same name wins);
- :mod:`.distributions`: its ``DistributionBase`` subclasses, adapted to this engine's
  distributor (elected at upstream's path, upstream's intervals, no thread of its own).
"""
