"""Evaluation: depth metrics, scale alignment, reference baselines and the evaluation runner.

Modules: :mod:`~colondepth.eval.depth_metrics`, :mod:`~colondepth.eval.alignment`,
:mod:`~colondepth.eval.baselines`, :mod:`~colondepth.eval.evaluate` (the runner behind
``colondepth evaluate``).  Nothing heavy is imported here.
"""
