"""Inference: :class:`colondepth.infer.predictor.DepthPredictor` turns uint8 RGB frames into depth in mm.

Import it from its module (``from colondepth.infer.predictor import DepthPredictor``); this package does not
import torch by itself.
"""
