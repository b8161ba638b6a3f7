"""Loss functions (pure functions of tensors, with valid masks).

- :mod:`colondepth.losses.supervised`: scale-invariant log loss, L1 on depth or inverse depth, multi-scale
  gradient matching, and their weighted sum over multi-scale predictions.
- :mod:`colondepth.losses.photometric`, :mod:`colondepth.losses.smoothness`: self-supervised objectives.
"""
