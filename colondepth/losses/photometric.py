"""Photometric view-synthesis losses for self-supervised depth and pose (pure functions, masks everywhere).

References: Zhou et al. 2017 (view synthesis, explainability masks), Godard et al. 2019 "monodepth2"
(L1 + SSIM, per-pixel minimum reprojection, auto-masking of static pixels, full-resolution multi-scale),
Pinard et al. 2018 (translation normalisation against scale drift).

Conventions
    Images are ``(B, 3, H, W)`` float in ``[0, 1]``.  Depth is z-depth in mm ``(B, 1, h, w)`` (any scale
    ``h x w``; it is upsampled to the image size before warping).  ``src_from_tgt`` is ``(B, N, 4, 4)``:
    it maps target-camera points to source ``n``'s camera (mm).  ``K`` is ``(B, 3, 3)`` or ``(3, 3)`` for
    the full ``H x W`` image.  Every mask is bool ``(B, 1, H, W)`` with True = use the pixel.

Endoscopy specifics
    The light source moves with the camera, so a surface point's brightness changes between frames:
    :func:`align_brightness` fits ``a * warped + b`` to the target per image and channel in closed form
    (least squares over valid pixels).  Specular highlights are view dependent: :func:`specular_mask`
    removes (dilated) saturated pixels of the target and of each warped source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from colondepth.geometry.warp import warp_source_to_target

__all__ = [
    "PhotometricOptions",
    "ssim_dissimilarity",
    "photometric_error",
    "align_brightness",
    "specular_mask",
    "normalize_translation",
    "upsample_depth",
    "explainability_regularization",
    "photometric_loss",
    "log_depth_anchor_loss",
]

#: Error assigned to pixels a source cannot explain (outside its image): never the per-pixel minimum.
_INVALID_ERROR = 1.0e3
#: :attr:`PhotometricOptions.invalid_warp` choices.
INVALID_WARP_MODES = ("skip", "identity")
#: :attr:`PhotometricOptions.light` choices.
LIGHT_MODELS = ("none", "tip")
#: Smallest incidence cosine :func:`tip_light_gain` uses (grazing views would divide by ~0).
MIN_INCIDENCE_COS = 0.05


@dataclass
class PhotometricOptions:
    """Options of :func:`photometric_loss`.

    alpha : weight of the SSIM term, ``alpha * (1 - SSIM) / 2 + (1 - alpha) * L1`` (monodepth2: 0.85).
    ssim_window : SSIM window size (px, odd).
    ssim_kind : ``"box"`` (monodepth2, fast) or ``"gaussian"`` (kornia).
    reduction : ``"min"`` per-pixel minimum over sources (monodepth2) or ``"mean"`` over valid sources.
    automask : drop pixels whose un-warped source already matches better than every warped one
        (static camera, objects moving with the camera, the lit spot of the endoscope light).
    brightness : ``"affine"`` (closed-form ``a I + b`` per image and channel) or ``"none"``.
    specular_threshold : grey level in ``[0, 1]`` above which a pixel counts as a highlight (``None``: off).
    specular_dilate : dilation radius (px) of highlight masks.
    light : ``"none"`` or ``"tip"``: the light sits at the endoscope tip (the camera centre) and moves with it.
        A Lambertian surface point then looks ``(cos_t / cos_s) * (r_s / r_t)^2`` times brighter in the target
        than in the source (inverse-square fall-off and incidence angle; :func:`tip_light_gain`, from the
        target depth, its normals and the pose), in *linear* intensity.  The warped source is taken to linear
        intensity with the camera response ``I_linear = I ** light_gamma`` (an sRGB-like display gamma,
        2.2 by default; endoscope processors apply such a curve), multiplied by that gain and taken back, before
        the (optional, then residual) affine brightness alignment.  The un-warped (identity) term is the
        hypothesis "the camera did not move", under which the light did not change either: its gain is 1.
    light_gamma : exponent of the camera response for ``light="tip"``.
    invalid_warp : what a target pixel with no valid warp from any source (it lands outside every source's
        field of view, or behind the camera) counts: ``"skip"`` leaves it out of the mean (monodepth2-style:
        a model that warps everything out of view scores 0 over no pixels), ``"identity"`` gives it the error
        of the un-warped source (no gradient), so leaving the view never lowers the loss.
    """

    alpha: float = 0.85
    ssim_window: int = 3
    ssim_kind: str = "box"
    reduction: str = "min"
    automask: bool = True
    brightness: str = "affine"
    specular_threshold: float | None = 0.95
    specular_dilate: int = 2
    scales_weight: list[float] = field(default_factory=list)
    invalid_warp: str = "skip"
    light: str = "none"
    light_gamma: float = 2.2

    def __post_init__(self) -> None:
        if self.light not in LIGHT_MODELS:
            raise ValueError(f"light must be one of {LIGHT_MODELS}, got {self.light!r}")
        if not self.light_gamma > 0:
            raise ValueError(f"light_gamma must be positive, got {self.light_gamma}")
        if self.invalid_warp not in INVALID_WARP_MODES:
            raise ValueError(f"invalid_warp must be one of {INVALID_WARP_MODES}, got {self.invalid_warp!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.reduction not in ("min", "mean"):
            raise ValueError(f"reduction must be 'min' or 'mean', got {self.reduction!r}")
        if self.ssim_kind not in ("box", "gaussian"):
            raise ValueError(f"ssim_kind must be 'box' or 'gaussian', got {self.ssim_kind!r}")
        if self.brightness not in ("affine", "none"):
            raise ValueError(f"brightness must be 'affine' or 'none', got {self.brightness!r}")
        if self.ssim_window < 1 or self.ssim_window % 2 == 0:
            raise ValueError(f"ssim_window must be a positive odd number, got {self.ssim_window}")


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor, window: int = 3, kind: str = "box") -> torch.Tensor:
    """``(1 - SSIM) / 2`` per pixel, averaged over channels: ``(B, C, H, W)`` x2 -> ``(B, 1, H, W)`` in [0, 1].

    ``kind="box"``: ``window x window`` mean filter with reflection padding (monodepth2's SSIM; pure
    ``avg_pool2d``).  ``kind="gaussian"``: :func:`kornia.losses.ssim_loss` (Gaussian window, sigma 1.5),
    much slower on CPU at these image sizes, hence not the default.  Constants ``C1 = 0.01^2``,
    ``C2 = 0.03^2`` for images in [0, 1].
    """
    if kind == "gaussian":
        import kornia

        d = kornia.losses.ssim_loss(x, y, window_size=window, max_val=1.0, reduction="none")
        return d.mean(dim=1, keepdim=True)
    if kind != "box":
        raise ValueError(f"SSIM kind must be 'box' or 'gaussian', got {kind!r}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    r = window // 2
    xp = F.pad(x, (r, r, r, r), mode="reflect")
    yp = F.pad(y, (r, r, r, r), mode="reflect")
    mx = F.avg_pool2d(xp, window, 1)
    my = F.avg_pool2d(yp, window, 1)
    sx = F.avg_pool2d(xp * xp, window, 1) - mx * mx
    sy = F.avg_pool2d(yp * yp, window, 1) - my * my
    sxy = F.avg_pool2d(xp * yp, window, 1) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2))
    return ((1.0 - ssim) / 2.0).clamp(0.0, 1.0).mean(dim=1, keepdim=True)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85, window: int = 3,
                      ssim_kind: str = "box") -> torch.Tensor:
    """``alpha * (1 - SSIM) / 2 + (1 - alpha) * |pred - target|``, channel mean: ``(B, 1, H, W)``."""
    l1 = (pred - target).abs().mean(dim=1, keepdim=True)
    if alpha == 0.0:
        return l1
    return alpha * ssim_dissimilarity(pred, target, window, ssim_kind) + (1.0 - alpha) * l1


def align_brightness(source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6,
                     detach: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit ``target ~ a * source + b`` per image and channel over ``mask`` in closed form.

    Parameters
    ----------
    source, target : (B, C, H, W)
    mask : (B, 1, H, W) bool, pixels used in the fit.
    detach : treat ``a, b`` as constants in backpropagation (the fit explains lighting, not geometry).

    Returns
    -------
    aligned : (B, C, H, W) ``a * source + b``.
    a, b : (B, C, 1, 1).  Fewer than 2 masked pixels (or a flat source) give ``a = 1, b = 0``.
    """
    m = mask.to(source.dtype)
    n = m.sum(dim=(2, 3), keepdim=True)
    ns = n.clamp(min=1.0)
    mu_s = (source * m).sum(dim=(2, 3), keepdim=True) / ns
    mu_t = (target * m).sum(dim=(2, 3), keepdim=True) / ns
    cov = ((source - mu_s) * (target - mu_t) * m).sum(dim=(2, 3), keepdim=True) / ns
    var = ((source - mu_s) ** 2 * m).sum(dim=(2, 3), keepdim=True) / ns
    ok = (n >= 2) & (var > eps)
    a = torch.where(ok, cov / var.clamp(min=eps), torch.ones_like(var))
    b = torch.where(ok, mu_t - a * mu_s, torch.zeros_like(var))
    if detach:
        a, b = a.detach(), b.detach()
    return a * source + b, a, b


def specular_mask(image: torch.Tensor, threshold: float = 0.95, dilate: int = 2) -> torch.Tensor:
    """True where ``image`` is NOT a specular highlight: ``(B, C, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` bool.

    A highlight is a pixel whose channel mean exceeds ``threshold``, grown by ``dilate`` px (max-pool).
    """
    hi = (image.mean(dim=1, keepdim=True) > threshold).to(image.dtype)
    if dilate > 0:
        hi = F.max_pool2d(hi, kernel_size=2 * dilate + 1, stride=1, padding=dilate)
    return hi < 0.5


def normalize_translation(src_from_tgt: torch.Tensor, target_norm_mm: float | torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Rescale translations so that their mean norm per sample equals ``target_norm_mm``.

    ``src_from_tgt`` : (B, N, 4, 4).  Photometric losses are blind to a joint scaling of depth and
    translation; fixing the translation magnitude (Pinard et al. 2018) pins the depth scale and stops it
    drifting during self-supervised training.  Rotations are unchanged.
    """
    t = src_from_tgt[..., :3, 3]
    mean_norm = t.norm(dim=-1).mean(dim=-1, keepdim=True).clamp(min=eps)  # (B, 1)
    scale = torch.as_tensor(target_norm_mm, dtype=t.dtype, device=t.device) / mean_norm
    out = src_from_tgt.clone()
    out[..., :3, 3] = t * scale.unsqueeze(-1)
    return out


def upsample_depth(depth_mm: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling of ``(B, 1, h, w)`` depth to ``(B, 1, height, width)`` (monodepth2's multi-scale)."""
    if depth_mm.shape[-2:] == (height, width):
        return depth_mm
    return F.interpolate(depth_mm, size=(height, width), mode="bilinear", align_corners=False)


def explainability_regularization(masks: list[torch.Tensor]) -> torch.Tensor:
    """Mean binary cross-entropy of explainability masks towards 1 (Zhou et al. 2017), over all scales.

    ``masks`` : list of ``(B, N, h, w)`` probabilities in (0, 1).  Returns a scalar.
    """
    if not masks:
        raise ValueError("explainability_regularization needs at least one mask")
    terms = [F.binary_cross_entropy(m.clamp(1e-6, 1 - 1e-6), torch.ones_like(m)) for m in masks]
    return torch.stack(terms).mean()


def tip_light_gain(target_depth_mm: torch.Tensor, K: torch.Tensor, src_from_tgt: torch.Tensor,
                   min_cos: float = MIN_INCIDENCE_COS) -> torch.Tensor:
    """Brightness ratio target / source of each target pixel's surface point under a light at the camera centre.

    Parameters
    ----------
    target_depth_mm : (B, 1, H, W) z-depth of the target view (mm), > 0.
    K : (B, 3, 3) or (3, 3) intrinsics (px).
    src_from_tgt : (B, 4, 4) target-camera -> source-camera (mm).
    min_cos : incidence cosines are clamped to ``[min_cos, 1]``.

    Returns
    -------
    (B, 1, H, W) ``g = (cos_t / cos_s) * (r_s / r_t) ** 2``: ``r`` the distance of the point to each camera
    centre (and light), ``cos`` the cosine between the surface normal (from the depth map,
    ``kornia.geometry.depth.depth_to_normals``) and the direction to that centre.  Lambertian linear intensity
    ``I = albedo * cos / r^2`` gives ``I_target = g * I_source``.  Differentiable in depth and pose.
    """
    from kornia.geometry.depth import depth_to_normals

    from colondepth.geometry.projection import _batched_K, backproject_depth

    B = target_depth_mm.shape[0]
    Kb = _batched_K(K, B, target_depth_mm)
    pts_t = backproject_depth(target_depth_mm, Kb)  # (B, 3, H, W)
    normals_t = depth_to_normals(target_depth_mm, Kb)  # (B, 3, H, W), unit
    R, t = src_from_tgt[:, :3, :3], src_from_tgt[:, :3, 3]
    pts_s = torch.einsum("bij,bjhw->bihw", R, pts_t) + t[:, :, None, None]
    normals_s = torch.einsum("bij,bjhw->bihw", R, normals_t)
    r_t = pts_t.norm(dim=1, keepdim=True).clamp(min=1e-6)
    r_s = pts_s.norm(dim=1, keepdim=True).clamp(min=1e-6)
    cos_t = ((normals_t * pts_t).sum(1, keepdim=True) / r_t).abs().clamp(min_cos, 1.0)
    cos_s = ((normals_s * pts_s).sum(1, keepdim=True) / r_s).abs().clamp(min_cos, 1.0)
    return (cos_t / cos_s) * (r_s / r_t) ** 2


def relight(image: torch.Tensor, gain: torch.Tensor, gamma: float) -> torch.Tensor:
    """``image`` in [0, 1] (display intensity, camera response ``I_linear = I ** gamma``) times a linear
    ``gain`` (B, 1, H, W), back in display intensity and clipped to [0, 1] like a sensor."""
    lin = image.clamp(0.0, 1.0) ** gamma * gain
    return (lin.clamp(0.0, 1.0) + 1e-8) ** (1.0 / gamma)


def _per_source_errors(target, sources, depth_full, src_from_tgt, K, opts, valid_base, source_fov=None,
                       rigid_mask=None):
    """Reprojection errors ``(B, N, H, W)``, warp validity ``(B, N, H, W)`` and warped images.

    ``source_fov`` (B, 1, H, W) bool: a warp is valid only where it samples inside the source's field of view
    (otherwise the black border would teach the network to push the image rim to infinity).
    """
    B, N = sources.shape[:2]
    errors, valids, warped_all = [], [], []
    for n in range(N):
        src = sources[:, n]
        if source_fov is not None:
            src = torch.cat([src, source_fov.to(src.dtype)], dim=1)
        warped, valid = warp_source_to_target(src, depth_full, src_from_tgt[:, n], K)
        if source_fov is not None:
            valid = valid & (warped[:, -1:] > 0.999)
            warped = warped[:, :-1]
        if opts.specular_threshold is not None:
            valid = valid & specular_mask(warped.detach(), opts.specular_threshold, opts.specular_dilate)
        if opts.light == "tip":
            gain = tip_light_gain(depth_full.clamp(min=1e-3), K, src_from_tgt[:, n])
            warped = relight(warped, gain, opts.light_gamma)
        if rigid_mask is not None:  # pixels that moved on their own (CoopNet) are no warp of this source
            valid = valid & rigid_mask[:, n:n + 1].to(torch.bool)
        fit_mask = valid & valid_base
        if opts.brightness == "affine":
            warped, _, _ = align_brightness(warped, target, fit_mask)
        err = photometric_error(warped, target, opts.alpha, opts.ssim_window, opts.ssim_kind)
        if opts.alpha > 0 and opts.ssim_window > 1:
            # an SSIM window that reaches an invalid (zero) warped pixel is meaningless: erode validity
            r = opts.ssim_window // 2
            invalid = F.max_pool2d((~valid).to(err.dtype), 2 * r + 1, stride=1, padding=r)
            valid = valid & (invalid < 0.5)
        errors.append(err)
        valids.append(valid)
        warped_all.append(warped)
    return torch.cat(errors, 1), torch.cat(valids, 1), torch.stack(warped_all, 1)


def photometric_loss(
    target: torch.Tensor,
    sources: torch.Tensor,
    depths_mm: list[torch.Tensor] | torch.Tensor,
    src_from_tgt: torch.Tensor,
    K: torch.Tensor,
    fov_mask: torch.Tensor | None = None,
    explainability: list[torch.Tensor] | None = None,
    options: PhotometricOptions | None = None,
    rigid_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Multi-scale photometric reprojection loss of a target frame against N source frames.

    Parameters
    ----------
    target : (B, 3, H, W) in [0, 1].
    sources : (B, N, 3, H, W) in [0, 1].
    depths_mm : one (B, 1, h, w) z-depth (mm) or a list, one per scale; each is upsampled to H x W.
    src_from_tgt : (B, N, 4, 4) mm.
    K : (B, 3, 3) or (3, 3) intrinsics of the H x W images (px).
    fov_mask : (B, 1, H, W) bool field-of-view mask, or None (all pixels).  It masks target pixels *and*
        warps that sample outside the source's field of view (same camera, same mask).
    explainability : optional list (one per scale, same length as ``depths_mm``) of (B, N, h, w) soft
        masks; each per-source error is multiplied by the (upsampled) mask.
    options : :class:`PhotometricOptions`.
    rigid_mask : optional (B, N, H, W) bool: per source, the target pixels that moved rigidly with the scene
        (:func:`colondepth.losses.flow.nonrigid_mask` negated); the others are no valid warp of that source.

    Returns
    -------
    loss : scalar, mean over scales of the masked mean per-pixel error.
    info : dict with ``"mask"`` (B, 1, H, W) bool pixels used at scale 0, ``"per_scale"`` list of floats,
        ``"automask_fraction"`` float, ``"warped"`` (B, N, 3, H, W) at scale 0 (detached).
    """
    opts = options or PhotometricOptions()
    if isinstance(depths_mm, torch.Tensor):
        depths_mm = [depths_mm]
    if target.dim() != 4 or sources.dim() != 5 or sources.shape[0] != target.shape[0]:
        raise ValueError(f"target must be (B, 3, H, W) and sources (B, N, 3, H, W); got {tuple(target.shape)} "
                         f"and {tuple(sources.shape)}")
    B, N, _, H, W = sources.shape
    if src_from_tgt.shape != (B, N, 4, 4):
        raise ValueError(f"src_from_tgt must be (B={B}, N={N}, 4, 4), got {tuple(src_from_tgt.shape)}")
    if explainability is not None and len(explainability) != len(depths_mm):
        raise ValueError("explainability needs one mask per depth scale")

    base = torch.ones(B, 1, H, W, dtype=torch.bool, device=target.device)
    if fov_mask is not None:
        fov_b = fov_mask.to(torch.bool)
        r = opts.ssim_window // 2 if opts.alpha > 0 else 0
        if r:  # SSIM windows must not reach the black border outside the field of view
            outside = F.max_pool2d((~fov_b).to(target.dtype), 2 * r + 1, stride=1, padding=r)
            fov_b = fov_b & (outside < 0.5)
        base = base & fov_b
    if opts.specular_threshold is not None:
        base = base & specular_mask(target, opts.specular_threshold, opts.specular_dilate)

    identity_err = None
    if opts.automask or opts.invalid_warp == "identity":
        # Un-warped sources: a pixel they already explain carries no depth/pose information.  They get the
        # brightness alignment the warped sources get, so the two errors compare like with like.
        unwarped = [sources[:, n] for n in range(N)]
        if opts.brightness == "affine":
            unwarped = [align_brightness(u, target, base)[0] for u in unwarped]
        identity_err = torch.cat(
            [photometric_error(u, target, opts.alpha, opts.ssim_window, opts.ssim_kind) for u in unwarped], 1
        )
        # a tiny deterministic offset breaks ties in favour of the warped error on textureless pixels
        identity_err = identity_err + 1e-5

    weights = opts.scales_weight or [1.0] * len(depths_mm)
    if len(weights) != len(depths_mm):
        raise ValueError(f"scales_weight has {len(weights)} entries for {len(depths_mm)} scales")
    losses, per_scale = [], []
    info: dict = {}
    for s, depth in enumerate(depths_mm):
        depth_full = upsample_depth(depth, H, W)
        err, valid, warped = _per_source_errors(target, sources, depth_full, src_from_tgt, K, opts, base,
                                                source_fov=fov_mask.to(torch.bool) if fov_mask is not None else None,
                                                rigid_mask=rigid_mask)
        if explainability is not None:
            e = explainability[s]
            if e.shape[-2:] != (H, W):
                e = F.interpolate(e, size=(H, W), mode="bilinear", align_corners=False)
            err = err * e
        err = torch.where(valid, err, torch.full_like(err, _INVALID_ERROR))
        any_valid = valid.any(dim=1, keepdim=True)
        if opts.reduction == "min":
            reproj, _ = err.min(dim=1, keepdim=True)
        else:
            vf = valid.to(err.dtype)
            reproj = (torch.where(valid, err, torch.zeros_like(err)).sum(1, keepdim=True)
                      / vf.sum(1, keepdim=True).clamp(min=1.0))
        mask = base & any_valid
        if identity_err is not None:
            id_min, _ = identity_err.min(dim=1, keepdim=True)
        if opts.invalid_warp == "identity":  # no valid warp: the un-warped error, counted, without gradient
            reproj = torch.where(any_valid, reproj, id_min.detach())
            mask = base
        if opts.automask:
            auto = reproj < id_min
            mask = mask & auto.detach()
        m = mask.to(reproj.dtype)
        loss_s = (reproj * m).sum() / m.sum().clamp(min=1.0)
        losses.append(weights[s] * loss_s)
        per_scale.append(float(loss_s.detach()))
        if s == 0:
            info["mask"] = mask.detach()
            info["warped"] = warped.detach()
            denom = (base & any_valid).sum().clamp(min=1)
            info["automask_fraction"] = float((mask.sum() / denom).detach()) if opts.automask else 1.0
            info["valid_warp_fraction"] = float((denom / base.sum().clamp(min=1)).detach())
    info["per_scale"] = per_scale
    return torch.stack(losses).sum() / sum(weights), info


def median_scale_to(depth_mm: torch.Tensor, reference_mm: torch.Tensor,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image scale that gives ``depth_mm`` the median of ``reference_mm``, and the gauge term that keeps it.

    ``depth_mm``, ``reference_mm``: (B, 1, H, W) mm; ``mask``: (B, 1, H, W) bool pixels to take medians over
    (None: all; an image with no masked pixel uses all of its pixels).  Returns ``scale`` (B, 1, 1, 1),
    ``median(reference) / median(depth)`` without gradient, and ``gauge``, the scalar mean over images of
    ``(log median(depth) - log median(reference))^2`` (0 when the scales already agree).

    >>> d = torch.full((2, 1, 2, 2), 4.0); r = torch.full((2, 1, 2, 2), 8.0)
    >>> s, g = median_scale_to(d, r)
    >>> s.flatten().tolist(), round(float(g), 4)
    ([2.0, 2.0], 0.4805)
    """
    if depth_mm.shape != reference_mm.shape or depth_mm.dim() != 4:
        raise ValueError(f"depth and reference must both be (B, 1, H, W); got {tuple(depth_mm.shape)} and "
                         f"{tuple(reference_mm.shape)}")
    med_d, med_r = [], []
    for b in range(depth_mm.shape[0]):
        m = None if mask is None else mask[b].to(torch.bool)
        if m is None or not bool(m.any()):
            med_d.append(depth_mm[b].median())
            med_r.append(reference_mm[b].median())
        else:
            med_d.append(depth_mm[b][m].median())
            med_r.append(reference_mm[b][m].median())
    med_d = torch.stack(med_d).clamp(min=1e-6)
    med_r = torch.stack(med_r).clamp(min=1e-6)
    scale = (med_r / med_d).detach().view(-1, 1, 1, 1)
    gauge = ((med_d.log() - med_r.log()) ** 2).mean()
    return scale, gauge


def log_depth_anchor_loss(depth_mm: torch.Tensor, init_depth_mm: torch.Tensor,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scale-invariant log-depth distance of a prediction to a reference (prior anchoring), scalar.

    Per image, with ``d = log(depth) - log(init)`` over ``mask``: ``mean(d ** 2) - mean(d) ** 2`` (the
    variance of the log ratio; :func:`colondepth.losses.supervised.silog_loss` with ``lam = 1``), averaged
    over images.  ``depth_mm = k * init_depth_mm`` for any ``k > 0`` gives 0, so the term keeps the *shape*
    of the initial (supervised) model's depth while leaving the scale to the photometric loss.

    depth_mm, init_depth_mm : (B, 1, H, W) z-depth (mm), > 0; ``init_depth_mm`` is treated as a constant.
    mask : (B, 1, H, W) bool pixels that count (field of view), or None (all).
    """
    from colondepth.losses.supervised import silog_loss

    if depth_mm.shape != init_depth_mm.shape:
        raise ValueError(f"depth {tuple(depth_mm.shape)} and init depth {tuple(init_depth_mm.shape)} differ in shape")
    return silog_loss(depth_mm, init_depth_mm.detach(), valid=mask, lam=1.0)
