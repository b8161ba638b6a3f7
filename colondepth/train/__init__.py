"""Training: curricula of stages over synthetic levels and real video.

- :mod:`~colondepth.train.config`: curriculum YAML -> validated pydantic models.
- :mod:`~colondepth.train.curriculum`: the runner (:func:`~colondepth.train.curriculum.train_curriculum`):
  checkpoints, ``--resume``, NaN stop, DistributedDataParallel under torchrun.
- :mod:`~colondepth.train.stage`: the stage-kind interface and registry (``supervised``, ``self_supervised``).
- :mod:`~colondepth.train.steps`: supervised step/validation functions and the learning-rate schedule.
- :mod:`~colondepth.train.data`: dataset discovery by level, validation hold-out, frame datasets.
- :mod:`~colondepth.train.checkpoint`: save/load checkpoints with model cards (``weights_only=True``).
- :mod:`~colondepth.train.logging`: ``metrics.jsonl``.
"""
