"""Networks.

- :mod:`colondepth.models.depth_net`: :class:`~colondepth.models.depth_net.DepthNet`, one RGB frame -> multi-scale
  z-depth in mm (config-driven DispNet-style encoder-decoder; owns its preprocessing).
- :mod:`colondepth.models.pose_net`: relative camera pose between frames (self-supervised fine-tuning).

Submodules are imported explicitly (``from colondepth.models.depth_net import DepthNet``) so importing this
package stays free of torch.
"""
