"""Pose network: shapes, near-identity initialisation, masks, and learning a known constant motion from
the photometric loss alone (analytic textured planes, ground-truth depth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from colondepth.geometry.pose import invert_pose
from colondepth.losses.photometric import PhotometricOptions, explainability_regularization, photometric_loss
from colondepth.models.pose_net import PoseNet, PoseNetConfig, build_pose_net


pytestmark = pytest.mark.usefixtures("one_torch_thread")


H, W = 32, 32
K = np.array([[28.0, 0.0, 15.5], [0.0, 28.0, 15.5], [0.0, 0.0, 1.0]])

SMALL = dict(channels=(8, 16, 16, 32), num_mask_scales=2)


@pytest.mark.parametrize("num_sources, mask_scales", [(1, 0), (2, 2), (4, 3)])
def test_shapes_and_identity_init(num_sources, mask_scales):
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(num_sources=num_sources, channels=(8, 16, 16, 32), num_mask_scales=mask_scales))
    with torch.no_grad():
        out = net(torch.rand(2, 3, H, W), torch.rand(2, num_sources, 3, H, W))
    assert out.src_from_tgt.shape == (2, num_sources, 4, 4) and out.vec6.shape == (2, num_sources, 6)
    # near identity at initialisation: < 0.01 rad and < 0.1 mm
    assert out.vec6[..., :3].abs().max() < 0.01 and out.vec6[..., 3:].abs().max() < 0.1
    if mask_scales:
        assert [tuple(m.shape) for m in out.masks] == [(2, num_sources, H >> s, W >> s) for s in range(mask_scales)]
        assert all(((m > 0) & (m < 1)).all() for m in out.masks)
        assert float(out.masks[0].mean()) == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=1e-5)
    else:
        assert out.masks is None


def test_pads_sizes_off_its_divisor_with_black():
    """A 30x40 frame (divisor 16) runs as the same frame zero-padded at the bottom/right to 32x48; the masks
    come back on the 30x40 grid (and 15x20 at the next scale), the padding cropped off."""
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(num_sources=2, **SMALL)).eval()
    for p in net.mask_heads.parameters():  # masks that vary over the image
        torch.nn.init.normal_(p, std=0.5)
    tgt, src = torch.rand(1, 3, 30, 40), torch.rand(1, 2, 3, 30, 40)
    padded = torch.zeros(1, 3, 32, 48), torch.zeros(1, 2, 3, 32, 48)
    padded[0][..., :30, :40], padded[1][..., :30, :40] = tgt, src
    with torch.no_grad():
        out, ref = net(tgt, src), net(*padded)
    torch.testing.assert_close(out.vec6, ref.vec6, rtol=0, atol=0)
    assert [tuple(m.shape) for m in out.masks] == [(1, 2, 30, 40), (1, 2, 15, 20)]
    torch.testing.assert_close(out.masks[0], ref.masks[0][..., :30, :40], rtol=0, atol=0)
    torch.testing.assert_close(out.masks[1], ref.masks[1][..., :15, :20], rtol=0, atol=0)


def test_rejects_bad_sizes():
    net = PoseNet(PoseNetConfig(num_sources=2, **SMALL))
    with pytest.raises(ValueError, match="one image size"):
        net(torch.rand(1, 3, 32, 32), torch.rand(1, 2, 3, 30, 32))
    with pytest.raises(ValueError, match="sources"):
        net(torch.rand(1, 3, H, W), torch.rand(1, 3, 3, H, W))
    assert isinstance(build_pose_net({"num_sources": 2, "channels": [8, 16], "num_mask_scales": 1}), PoseNet)


def _pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def _render_plane(world_from_cam, phase, normal, dist):
    v, u = np.mgrid[:H, :W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    dirs = rays @ world_from_cam[:3, :3].T
    o = world_from_cam[:3, 3]
    lam = (dist - normal @ o) / (dirs @ normal)
    X = o + lam[..., None] * dirs
    a, b = X[..., 0], X[..., 1]
    img = np.stack([0.5 + 0.25 * np.sin(a / 1.6 + phase[0]) * np.cos(b / 2.2 + phase[1]),
                    0.5 + 0.2 * np.sin((a + b) / 1.9 + phase[2]),
                    0.45 + 0.2 * np.cos((a - b) / 2.4 + phase[0])])
    return img, lam


#: the constant camera motion between consecutive frames: cam_{k+1} = cam_k @ STEP (forward, sideways, roll)
STEP = _pose([0.0, 0.0, 0.03], [0.8, -0.4, 1.5])


def _clip_batch(rng, batch):
    """Snippets (k-1, k, k+1) of planes with random texture phase, tilt and distance."""
    tgts, srcs, depths = [], [], []
    for _ in range(batch):
        phase = rng.uniform(0, 2 * np.pi, 3)
        normal = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), 1.0])
        normal /= np.linalg.norm(normal)
        dist = rng.uniform(35.0, 50.0)
        T_tgt = _pose(rng.normal(0, 0.03, 3), rng.normal(0, 1.0, 3))
        views = [_render_plane(T, phase, normal, dist) for T in (T_tgt @ np.linalg.inv(STEP), T_tgt, T_tgt @ STEP)]
        tgts.append(views[1][0])
        depths.append(views[1][1][None])
        srcs.append(np.stack([views[0][0], views[2][0]]))
    f = lambda x: torch.as_tensor(np.stack(x), dtype=torch.float32)  # noqa: E731
    return f(tgts), f(srcs), f(depths)


def test_learns_known_constant_motion_from_photometric_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = PoseNet(PoseNetConfig(num_sources=2, channels=(8, 16, 16, 32), num_mask_scales=0, translation_scale_mm=1.0))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    Kt = torch.as_tensor(K, dtype=torch.float32)
    opts = PhotometricOptions(alpha=0.0, automask=False, brightness="none", specular_threshold=None)
    data = [_clip_batch(rng, 4) for _ in range(6)]
    for step in range(100):
        tgt, src, depth = data[step % len(data)]
        out = net(tgt, src)
        loss, _ = photometric_loss(tgt, src, depth, out.src_from_tgt, Kt, options=opts)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tgt, src, depth = _clip_batch(np.random.default_rng(1), 4)  # unseen clips
    with torch.no_grad():
        pred = net(tgt, src).src_from_tgt
    # truth: src_from_tgt = STEP for source k-1 (world_from_tgt @ inv(STEP)) and inv(STEP) for source k+1
    step = torch.as_tensor(STEP, dtype=torch.float32)
    truth = torch.stack([step, invert_pose(step)])
    t_err = (pred[..., :3, 3] - truth[:, :3, 3]).norm(dim=-1)
    assert float(t_err.max()) < 0.35, t_err  # of a 1.75 mm step
    r_err = (pred[..., :3, :3] - truth[:, :3, :3]).abs().max()
    assert float(r_err) < 0.01


def test_masks_are_trainable_towards_one():
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(num_sources=2, **SMALL))
    out = net(torch.rand(1, 3, H, W), torch.rand(1, 2, 3, H, W))
    reg = explainability_regularization(out.masks)
    reg.backward()
    assert net.mask_heads[0].bias.grad is not None and (net.mask_heads[0].bias.grad < 0).all()
