"""Photometric and smoothness losses on an analytic pair: a textured tilted plane rendered in numpy
from two camera poses (ground-truth depth and pose known in closed form)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from colondepth.losses.photometric import (
    PhotometricOptions,
    ssim_dissimilarity,
    align_brightness,
    explainability_regularization,
    normalize_translation,
    photometric_loss,
    specular_mask,
)
from colondepth.losses.smoothness import edge_aware_smoothness


pytestmark = pytest.mark.usefixtures("one_torch_thread")


H, W = 48, 64
K = np.array([[50.0, 0.0, 31.0], [0.0, 52.0, 24.5], [0.0, 0.0, 1.0]])
N_PLANE = np.array([0.25, -0.15, 1.0]) / np.linalg.norm([0.25, -0.15, 1.0])
D_PLANE = 60.0


def pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def render_plane(world_from_cam):
    """(3, H, W) image in [0, 1] and (H, W) z-depth (mm) of the textured plane n.X = d."""
    v, u = np.mgrid[:H, :W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    R, t = world_from_cam[:3, :3], world_from_cam[:3, 3]
    dirs = rays @ R.T
    lam = (D_PLANE - N_PLANE @ t) / (dirs @ N_PLANE)
    X = t + lam[..., None] * dirs
    e1 = np.cross(N_PLANE, [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(N_PLANE, e1)
    a, b = X @ e1, X @ e2
    img = np.stack([
        0.5 + 0.2 * np.sin(a / 1.7) + 0.15 * np.cos(b / 2.3),
        0.45 + 0.2 * np.sin((a + b) / 2.1) + 0.1 * np.cos(a / 3.1),
        0.4 + 0.2 * np.cos((a - b) / 1.9) + 0.1 * np.sin(b / 1.3),
    ])
    return img, lam  # rays have z = 1, so lam is z-depth


T_TGT = pose([0.02, -0.03, 0.01], [1.0, -0.5, 0.0])
T_SRC1 = pose([0.05, 0.02, -0.04], [3.0, 0.5, 4.0])
T_SRC2 = pose([-0.03, 0.04, 0.02], [-2.0, 1.0, -3.0])


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


@pytest.fixture(scope="module")
def pair():
    tgt, depth = render_plane(T_TGT)
    s1, _ = render_plane(T_SRC1)
    s2, _ = render_plane(T_SRC2)
    src_from_tgt = np.stack([np.linalg.solve(T_SRC1, T_TGT), np.linalg.solve(T_SRC2, T_TGT)])
    return dict(
        target=_t(tgt)[None], sources=_t(np.stack([s1, s2]))[None], depth=_t(depth)[None, None],
        pose=_t(src_from_tgt)[None], K=_t(K),
    )


NO_AUTOMASK = PhotometricOptions(automask=False)


def test_ground_truth_gives_near_zero_loss(pair):
    loss, info = photometric_loss(pair["target"], pair["sources"], pair["depth"], pair["pose"], pair["K"],
                                  options=NO_AUTOMASK)
    assert float(loss) < 0.004
    assert info["mask"].float().mean() > 0.6  # most of the frame is explained by at least one source
    # wrong translation, wrong rotation, wrong depth scale: all clearly worse
    bad_t = pair["pose"].clone()
    bad_t[..., :3, 3] += torch.tensor([1.5, 0.0, 0.0])
    bad_r = pair["pose"].clone()
    bad_r[..., :3, :3] = bad_r[..., :3, :3] @ _t(Rotation.from_rotvec([0, 0.03, 0]).as_matrix())
    for p, d in [(bad_t, pair["depth"]), (bad_r, pair["depth"]), (pair["pose"], pair["depth"] * 1.3)]:
        wrong, _ = photometric_loss(pair["target"], pair["sources"], d, p, pair["K"], options=NO_AUTOMASK)
        assert float(wrong) > 5 * float(loss), (float(wrong), float(loss))


def test_gradient_points_back_to_true_depth_scale(pair):
    s = torch.tensor(1.15, requires_grad=True)
    loss, _ = photometric_loss(pair["target"], pair["sources"], pair["depth"] * s, pair["pose"], pair["K"],
                               options=NO_AUTOMASK)
    loss.backward()
    assert s.grad > 0  # decreasing the scale towards 1 lowers the loss


def test_multiscale_depth_is_upsampled(pair):
    half = torch.nn.functional.interpolate(pair["depth"], scale_factor=0.5, mode="bilinear", align_corners=False)
    loss, info = photometric_loss(pair["target"], pair["sources"], [pair["depth"], half], pair["pose"], pair["K"],
                                  options=NO_AUTOMASK)
    assert len(info["per_scale"]) == 2 and max(info["per_scale"]) < 0.006


def test_brightness_alignment_removes_light_change(pair):
    dim_sources = 0.6 * pair["sources"] + 0.15  # the endoscope light moved with the camera
    on, _ = photometric_loss(pair["target"], dim_sources, pair["depth"], pair["pose"], pair["K"], options=NO_AUTOMASK)
    off, _ = photometric_loss(pair["target"], dim_sources, pair["depth"], pair["pose"], pair["K"],
                              options=PhotometricOptions(automask=False, brightness="none"))
    assert float(on) < 0.005 and float(off) > 5 * float(on)
    x = torch.rand(2, 3, 8, 8)
    y, a, b = align_brightness(x, 0.3 * x + 0.2, torch.ones(2, 1, 8, 8, dtype=torch.bool))
    torch.testing.assert_close(a, torch.full_like(a, 0.3))
    torch.testing.assert_close(b, torch.full_like(b, 0.2))


def test_specular_highlights_are_masked(pair):
    shiny = pair["sources"].clone()
    shiny[:, :, :, 10:20, 20:34] = 1.0  # saturated highlight in both sources, not in the target
    on, info = photometric_loss(pair["target"], shiny, pair["depth"], pair["pose"], pair["K"], options=NO_AUTOMASK)
    off, _ = photometric_loss(pair["target"], shiny, pair["depth"], pair["pose"], pair["K"],
                              options=PhotometricOptions(automask=False, specular_threshold=None))
    assert float(on) < 0.006 and float(off) > 3 * float(on)
    m = specular_mask(torch.tensor([[[[0.2, 0.99, 0.2, 0.2, 0.2]]]]).expand(1, 3, 1, 5), 0.95, dilate=1)
    assert m[0, 0, 0].tolist() == [False, False, False, True, True]


def test_min_reprojection_ignores_the_bad_source(pair):
    occluded = pair["sources"].clone()
    # an occluder (e.g. a tool or bubble) in the centre of source 2 only
    occluded[:, 1, :, 14:34, 18:46] = torch.rand((3, 20, 28), generator=torch.Generator().manual_seed(0))
    loss_min, loss_mean = (
        float(photometric_loss(pair["target"], occluded, pair["depth"], pair["pose"], pair["K"],
                               options=PhotometricOptions(automask=False, reduction=r))[0])
        for r in ("min", "mean")
    )
    assert loss_min < 0.01 and loss_mean > 5 * loss_min


def test_automask_drops_static_pixels(pair):
    static = pair["target"][:, None].expand(1, 2, 3, H, W).clone()  # camera did not move
    moving_pose = pair["pose"]  # but the network claims it did
    with_mask, info = photometric_loss(pair["target"], static, pair["depth"], moving_pose, pair["K"])
    without, _ = photometric_loss(pair["target"], static, pair["depth"], moving_pose, pair["K"], options=NO_AUTOMASK)
    assert info["automask_fraction"] < 0.05 and float(with_mask) < 0.01
    assert float(without) > 0.02


def test_automask_identity_error_is_brightness_aligned(pair):
    """A static camera under a changed light: the un-warped sources still explain the target once aligned, so
    the auto-mask drops the static pixels as it does without the light change."""
    static = 0.6 * pair["target"][:, None].expand(1, 2, 3, H, W) + 0.15
    _, info = photometric_loss(pair["target"], static, pair["depth"], pair["pose"], pair["K"])
    assert info["automask_fraction"] < 0.05


def test_pixels_without_a_valid_warp_count_their_unwarped_error(pair):
    """A pose that carries every pixel out of the sources' view: "skip" scores 0 over no pixels (the minimum a
    collapsing model finds), "identity" scores the un-warped error over all pixels."""
    away = pair["pose"].clone()
    away[..., :3, 3] += torch.tensor([500.0, 0.0, 0.0])
    skip, info_s = photometric_loss(pair["target"], pair["sources"], pair["depth"], away, pair["K"],
                                    options=NO_AUTOMASK)
    ident, info_i = photometric_loss(pair["target"], pair["sources"], pair["depth"], away, pair["K"],
                                     options=PhotometricOptions(automask=False, invalid_warp="identity"))
    assert info_s["valid_warp_fraction"] < 1e-3 and info_s["mask"].float().mean() < 1e-3 and float(skip) < 1e-3
    assert info_i["mask"].all() and info_i["valid_warp_fraction"] < 1e-3
    from colondepth.losses.photometric import photometric_error

    unwarped = torch.cat([photometric_error(align_brightness(pair["sources"][:, n], pair["target"],
                                                             torch.ones(1, 1, H, W, dtype=torch.bool))[0],
                                            pair["target"], 0.85, 3, "box") for n in range(2)], 1)
    assert float(ident) == pytest.approx(float(unwarped.min(1).values.mean()) + 1e-5, rel=2e-3)
    # the true pose is unaffected: every counted pixel had a valid warp before
    good_s, info_g = photometric_loss(pair["target"], pair["sources"], pair["depth"], pair["pose"], pair["K"],
                                      options=NO_AUTOMASK)
    good_i, _ = photometric_loss(pair["target"], pair["sources"], pair["depth"], pair["pose"], pair["K"],
                                 options=PhotometricOptions(automask=False, invalid_warp="identity"))
    assert float(good_i) > float(good_s) and float(good_i) < 4 * float(ident)
    assert 0.6 < info_g["valid_warp_fraction"] < 1.0
    with pytest.raises(ValueError, match="invalid_warp must be one of"):
        PhotometricOptions(invalid_warp="zero")


def render_lit_plane(world_from_cam, gamma=2.2):
    """The textured plane lit by a point light at the camera centre (Lambertian, inverse square), through the
    camera response ``I = I_linear ** (1 / gamma)``: (3, H, W) display image and (H, W) z-depth."""
    albedo, depth = render_plane(world_from_cam)
    v, u = np.mgrid[:H, :W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    X_cam = rays * depth[..., None]
    r = np.linalg.norm(X_cam, axis=-1)
    n_cam = world_from_cam[:3, :3].T @ N_PLANE
    cos = np.abs(X_cam @ n_cam) / r
    linear = albedo ** gamma * cos * (50.0 / r) ** 2
    return np.clip(linear, 0, 1) ** (1 / gamma), depth


def test_tip_light_gain_is_inverse_square_and_cosine():
    """Fronto-parallel plane, camera moved straight back by d: gain (r_s / r_t)^2 = ((z + d) / z)^2 at the
    centre pixel, incidence cosines equal."""
    from colondepth.losses.photometric import tip_light_gain

    depth = torch.full((1, 1, H, W), 40.0, dtype=torch.float64)
    src_from_tgt = torch.eye(4, dtype=torch.float64)[None].clone()
    src_from_tgt[0, 2, 3] = 10.0  # the source camera is 10 mm further back
    Kt = torch.tensor(K, dtype=torch.float64)
    g = tip_light_gain(depth, Kt, src_from_tgt)
    assert float(g[0, 0, 24, 31]) == pytest.approx((50.0 / 40.0) ** 2, rel=1e-3)
    # off-centre pixel: r scales by the same ratio along the ray only if the camera moved along that ray;
    # here both cosines are z / r of each camera, so g = (cos_t / cos_s) * (r_s / r_t)^2 exactly
    v, u = 5, 60
    x, y = (u - K[0, 2]) / K[0, 0] * 40.0, (v - K[1, 2]) / K[1, 1] * 40.0
    r_t, r_s = math.sqrt(x * x + y * y + 40 ** 2), math.sqrt(x * x + y * y + 50 ** 2)
    assert float(g[0, 0, v, u]) == pytest.approx((40 / r_t) / (50 / r_s) * (r_s / r_t) ** 2, rel=1e-3)


def test_light_at_the_tip_explains_the_moving_light():
    """Frames of a plane lit from a camera that moves 10-12 mm along its axis: at the true depth and pose the
    light-aware loss is what the plain loss is without the light change (interpolation only), far below the
    plain loss; with a residual affine alignment it beats the affine alignment alone; the depth-scale gradient
    still points home."""
    T_s = [pose([0.05, 0.02, -0.04], [3.0, 0.5, -12.0]), pose([-0.03, 0.04, 0.02], [-2.0, 1.0, 10.0])]
    P = _t(np.stack([np.linalg.solve(T, T_TGT) for T in T_s]))[None]

    def loss(render, depth_scale=1.0, **kw):
        tgt, depth = render(T_TGT)
        srcs = np.stack([render(T)[0] for T in T_s])
        opts = PhotometricOptions(automask=False, specular_threshold=None, **kw)
        return photometric_loss(_t(tgt)[None], _t(srcs)[None], _t(depth)[None, None] * depth_scale, P, _t(K),
                                options=opts)[0]

    lit = {name: float(loss(render_lit_plane, **kw)) for name, kw in (
        ("plain", dict(brightness="none")), ("affine", dict(brightness="affine")),
        ("tip", dict(brightness="none", light="tip")), ("tip_affine", dict(brightness="affine", light="tip")))}
    unlit_plain = float(loss(render_plane, brightness="none"))
    assert lit["tip"] < 0.2 * lit["plain"]
    assert lit["tip"] < 1.3 * unlit_plain
    assert lit["tip_affine"] < 0.8 * lit["affine"]
    s = torch.tensor(1.15, requires_grad=True)
    loss(render_lit_plane, depth_scale=s, brightness="none", light="tip").backward()
    assert s.grad > 0
    with pytest.raises(ValueError, match="light must be one of"):
        PhotometricOptions(light="ring")


def test_fov_mask_limits_pixels(pair):
    fov = torch.zeros(1, 1, H, W, dtype=torch.bool)
    fov[..., 10:30, 10:40] = True
    _, info = photometric_loss(pair["target"], pair["sources"], pair["depth"], pair["pose"], pair["K"],
                               fov_mask=fov, options=NO_AUTOMASK)
    assert not info["mask"][~fov].any() and info["mask"][fov].float().mean() > 0.6


def test_warps_must_sample_inside_the_source_field_of_view(pair):
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    disk = (((u - 31.5) ** 2 + (v - 23.5) ** 2) < 22.0 ** 2)[None, None]
    target = pair["target"] * disk
    sources = pair["sources"] * disk[:, None]  # black corners of an endoscope image
    with_fov, info = photometric_loss(target, sources, pair["depth"], pair["pose"], pair["K"], fov_mask=disk,
                                      options=NO_AUTOMASK)
    target_only = disk & info["mask"].new_ones(info["mask"].shape)
    assert float(with_fov) < 0.005 and info["mask"].float().sum() > 0.5 * float(disk.sum())
    # masking only the target still compares rim pixels with the black border of the sources
    from colondepth.losses import photometric as ph

    err, valid, _ = ph._per_source_errors(target, sources, pair["depth"], pair["pose"], pair["K"], NO_AUTOMASK,
                                          target_only, source_fov=None)
    rim_err = err[valid & target_only.expand_as(valid)].mean()
    assert float(rim_err) > 3 * float(with_fov)


def test_explainability_masks_weight_errors(pair):
    e_half = [torch.full((1, 2, H, W), 0.5)]
    loss1, _ = photometric_loss(pair["target"], pair["sources"] * 0.0 + 0.5, pair["depth"], pair["pose"], pair["K"],
                                options=PhotometricOptions(automask=False, brightness="none"))
    loss_half, _ = photometric_loss(pair["target"], pair["sources"] * 0.0 + 0.5, pair["depth"], pair["pose"],
                                    pair["K"], explainability=e_half,
                                    options=PhotometricOptions(automask=False, brightness="none"))
    assert float(loss_half) == pytest.approx(0.5 * float(loss1), rel=1e-4)
    assert float(explainability_regularization([torch.full((1, 2, 4, 4), 0.5)])) == pytest.approx(math.log(2), rel=1e-4)
    assert float(explainability_regularization([torch.ones(1, 2, 4, 4)])) < 1e-5


def test_translation_normalisation():
    p = torch.eye(4).repeat(2, 3, 1, 1)
    p[0, :, :3, 3] = torch.tensor([[3.0, 0, 0], [0, 4.0, 0], [0, 0, 5.0]])
    p[1, :, :3, 3] = torch.tensor([[0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]])
    p[..., :3, :3] = _t(Rotation.from_rotvec([0.1, 0, 0]).as_matrix())
    q = normalize_translation(p, 2.0)
    torch.testing.assert_close(q[..., :3, 3].norm(dim=-1).mean(-1), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(q[..., :3, :3], p[..., :3, :3])
    torch.testing.assert_close(q[0, 2, :3, 3], torch.tensor([0.0, 0.0, 2.5]))


def test_smoothness_edge_aware_and_scale_free():
    img = torch.zeros(1, 3, 16, 16)
    img[..., 8:] = 1.0  # an image edge between columns 7 and 8
    step_at_edge = torch.ones(1, 1, 16, 16)
    step_at_edge[..., 8:] = 2.0
    step_elsewhere = torch.ones(1, 1, 16, 16)
    step_elsewhere[..., 4:] = 2.0
    assert float(edge_aware_smoothness(torch.full((1, 1, 16, 16), 0.3), img)) == 0.0
    a, b = edge_aware_smoothness(step_at_edge, img), edge_aware_smoothness(step_elsewhere, img)
    assert float(a) < 0.5 * float(b)
    torch.testing.assert_close(edge_aware_smoothness(7.0 * step_elsewhere, img), b)
    mask = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    mask[..., :, 2:6] = False  # hide the step
    assert float(edge_aware_smoothness(step_elsewhere, img, mask)) == pytest.approx(0.0, abs=1e-7)


def test_box_ssim_matches_kornia_gaussian_ssim(pair):
    x = pair["target"]
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for kind in ("box", "gaussian"):
        assert float(ssim_dissimilarity(x, x, 3, kind).abs().max()) < 1e-6
    box, gauss = (float(ssim_dissimilarity(x, noisy, 3, k).mean()) for k in ("box", "gaussian"))
    assert 0.05 < box and abs(box - gauss) < 0.25 * gauss


def test_log_depth_anchor_is_scale_invariant_and_analytic():
    from colondepth.losses.photometric import log_depth_anchor_loss

    torch.manual_seed(0)
    init = 5.0 + 40.0 * torch.rand(2, 1, 8, 8)
    for k in (0.3, 1.0, 7.0):
        assert float(log_depth_anchor_loss(k * init, init)) == pytest.approx(0.0, abs=1e-10)
    # log ratio +a on the left half, -a on the right half: variance a^2 in every image
    a = 0.2
    ratio = torch.ones_like(init)
    ratio[..., :4] = math.exp(a)
    ratio[..., 4:] = math.exp(-a)
    assert float(log_depth_anchor_loss(3.0 * ratio * init, init)) == pytest.approx(a * a, rel=1e-5)
    # only masked pixels count: the left half alone has a constant ratio -> 0
    mask = torch.zeros_like(init, dtype=torch.bool)
    mask[..., :4] = True
    assert float(log_depth_anchor_loss(ratio * init, init, mask)) == pytest.approx(0.0, abs=1e-7)  # float32 arithmetic
    # the gradient flows to the prediction only, and pulls the log ratio towards a constant
    pred = (ratio * init).clone().requires_grad_(True)
    ref = init.clone().requires_grad_(True)
    log_depth_anchor_loss(pred, ref).backward()
    assert ref.grad is None and float(pred.grad[..., :4].sum()) > 0 > float(pred.grad[..., 4:].sum())
