"""CoopNet-style co-training: rigid flow, flow warping, the non-rigid mask and the flow network, on the analytic
textured plane of test_photometric with a blob of debris that moves on its own between the frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colondepth.losses.flow import flow_photometric_loss, flow_warp, nonrigid_mask, rigid_flow
from colondepth.losses.photometric import PhotometricOptions, photometric_loss

from test_photometric import H, K, T_SRC1, T_TGT, W, _t, render_plane

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOB = (slice(14, 30), slice(24, 44))  # rows, columns of the debris in the target
BLOB_SHIFT = (0, 6)  # it moved 6 px to the right in the source, whatever the camera did


def _scene():
    """Target, source with the moving blob, true depth, pose, and the true optical flow (target -> source)."""
    tgt, depth = render_plane(T_TGT)
    src, _ = render_plane(T_SRC1)
    P = _t(np.linalg.solve(T_SRC1, T_TGT))[None]
    d = _t(depth)[None, None]
    flow = rigid_flow(d, _t(K), P).clone()
    rng = np.random.default_rng(3)
    blob = rng.uniform(0.1, 0.9, (3, BLOB[0].stop - BLOB[0].start, BLOB[1].stop - BLOB[1].start))
    tgt = tgt.copy()
    tgt[:, BLOB[0], BLOB[1]] = blob
    # the blob's pixels in the source: where the rigid flow would put them, plus its own motion
    src = src.copy()
    dv, du = BLOB_SHIFT
    r0, c0 = BLOB[0].start, BLOB[1].start
    fu = float(flow[0, 0, BLOB[0], BLOB[1]].mean()); fv = float(flow[0, 1, BLOB[0], BLOB[1]].mean())
    rs, cs = int(round(r0 + fv + dv)), int(round(c0 + fu + du))
    src[:, rs:rs + blob.shape[1], cs:cs + blob.shape[2]] = blob
    true_flow = flow.clone()
    true_flow[0, 0, BLOB[0], BLOB[1]] = cs - c0
    true_flow[0, 1, BLOB[0], BLOB[1]] = rs - r0
    return _t(tgt)[None], _t(src)[None], d, P, flow, true_flow


def test_rigid_flow_of_a_sideways_move_is_f_t_over_z():
    depth = torch.full((1, 1, H, W), 40.0)
    P = torch.eye(4)[None].clone()
    P[0, 0, 3] = -2.0  # the scene moves 2 mm to the left in the source camera: pixels move left
    f = rigid_flow(depth, _t(K), P)
    np.testing.assert_allclose(f[0, 0].numpy(), -K[0, 0] * 2.0 / 40.0, rtol=1e-5)
    np.testing.assert_allclose(f[0, 1].numpy(), 0.0, atol=1e-4)


def test_flow_warp_with_the_rigid_flow_is_the_depth_warp():
    from colondepth.geometry.warp import warp_source_to_target

    tgt, depth = render_plane(T_TGT)
    src, _ = render_plane(T_SRC1)
    P = _t(np.linalg.solve(T_SRC1, T_TGT))[None]
    d = _t(depth)[None, None]
    a, va = flow_warp(_t(src)[None], rigid_flow(d, _t(K), P))
    b, vb = warp_source_to_target(_t(src)[None], d, P, _t(K))
    m = va & vb
    assert float(m.float().mean()) > 0.6
    torch.testing.assert_close(a * m, b * m, atol=1e-4, rtol=0)


def test_nonrigid_mask_finds_the_moving_debris_and_clears_the_loss():
    tgt, src, d, P, rigid, true_flow = _scene()
    mask = nonrigid_mask(true_flow, rigid, threshold_px=2.0, threshold_rel=0.2)
    expected = torch.zeros(1, 1, H, W, dtype=torch.bool)
    expected[0, 0, BLOB[0], BLOB[1]] = True
    iou = float((mask & expected).sum()) / float((mask | expected).sum())
    assert iou > 0.95
    opts = PhotometricOptions(automask=False)
    sources = src[:, None]
    with_debris, _ = photometric_loss(tgt, sources, d, P[:, None], _t(K), options=opts)
    masked, _ = photometric_loss(tgt, sources, d, P[:, None], _t(K), options=opts, rigid_mask=~mask[:, None, 0])
    assert float(masked) < 0.5 * float(with_debris)
    # the flow's own loss is lower with the true (non-rigid) flow than with the rigid one
    everywhere = torch.ones(1, 1, H, W, dtype=torch.bool)
    l_true, _ = flow_photometric_loss(tgt, src, true_flow, everywhere, smoothness_weight=0.0)
    l_rigid, _ = flow_photometric_loss(tgt, src, rigid, everywhere, smoothness_weight=0.0)
    assert float(l_true) < 0.7 * float(l_rigid)


def test_flow_network_learns_the_pair():
    from colondepth.models.flow_net import FlowNet, FlowNetConfig

    tgt, src, *_ = _scene()
    torch.manual_seed(0)
    net = FlowNet(FlowNetConfig(features=(8, 8, 16, 16, 32, 8)))
    f0 = net(tgt, src)
    assert f0.shape == (1, 2, H, W) and float(f0.detach().abs().max()) < 0.5  # starts near zero flow
    everywhere = torch.ones(1, 1, H, W, dtype=torch.bool)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss, info = flow_photometric_loss(tgt, src, net(tgt, src), everywhere)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.8 * first
    with pytest.raises(ValueError, match="must both be"):
        net(tgt, src[:, :, :10])
