"""Analytic shape-from-shading scenes written in the on-disk dataset layout (DESIGN section 3).

Frames are rendered in closed form with a point light at the camera centre: radiance
``albedo * cos(incidence) / range_mm**2`` (then gamma 1/2.2), so image brightness carries a real
depth signal.  Scenes: tilted planes (level L1) and tubes seen from off the axis (level L2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

DEPTH_SCALE_MM = 0.01
FOCAL_FRACTION = 0.8  # fx = FOCAL_FRACTION * width


def _rays(h: int, w: int):
    fx = fy = FOCAL_FRACTION * w
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (u - cx) / fx
    y = (v - cy) / fy
    d = np.stack([x, y, np.ones_like(x)], axis=-1)  # (H, W, 3), z component 1: t along d is z-depth
    return d, (fx, fy, cx, cy)


def plane_frame(h: int, w: int, rng: np.random.Generator):
    """A plane n . X = dist in front of the camera, tilted up to ~50 degrees; returns (rgb uint8, depth_mm)."""
    d, K = _rays(h, w)
    tilt = rng.uniform(0.0, 0.9)
    az = rng.uniform(0, 2 * np.pi)
    n = np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])
    dist = rng.uniform(15.0, 60.0)
    z = dist / (d @ n)
    return _shade(d, z, np.broadcast_to(n, d.shape), rng), K


def tube_frame(h: int, w: int, rng: np.random.Generator):
    """Inside a cylinder (radius 12-20 mm) whose axis is tilted and offset from the camera."""
    d, K = _rays(h, w)
    radius = rng.uniform(12.0, 20.0)
    a = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), 1.0])
    a /= np.linalg.norm(a)
    p0 = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 0.0]) * radius  # axis point
    w_ = -p0
    d_perp = d - (d @ a)[..., None] * a
    w_perp = w_ - (w_ @ a) * a
    A = (d_perp ** 2).sum(-1)
    B = 2.0 * (d_perp @ w_perp)
    C = w_perp @ w_perp - radius ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-B + np.sqrt(B * B - 4 * A * C)) / (2 * A)
    P = t[..., None] * d
    q = P - p0
    nrm = q - (q @ a)[..., None] * a
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True) + 1e-12
    return _shade(d, t, nrm, rng), K


def _shade(d, z, n, rng, max_depth_mm: float = 150.0):
    rng_mm = z * np.linalg.norm(d, axis=-1)
    cos = np.abs((n * d).sum(-1)) / np.linalg.norm(d, axis=-1)
    albedo = rng.uniform(0.8, 1.0)
    radiance = albedo * 300.0 * cos / np.maximum(rng_mm, 1e-6) ** 2
    gray = np.clip(radiance, 0, 1) ** (1 / 2.2)
    rgb = np.stack([gray, 0.75 * gray, 0.65 * gray], axis=-1)
    valid = np.isfinite(z) & (z > 0) & (z < max_depth_mm)
    depth = np.where(valid, z, 0.0)
    rgb = np.where(valid[..., None], rgb, 0.0)
    return (rgb * 255).round().astype(np.uint8), depth.astype(np.float32)


def write_dataset(root: Path, level: str, sequences: int = 2, frames: int = 6, size: int = 32, seed: int = 0) -> Path:
    """Write a dataset folder ``root`` with ``dataset.yaml`` (level) and ``seq_NNNNN`` folders."""
    import cv2

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    render = plane_frame if level == "L1" else tube_frame
    rng = np.random.default_rng(seed)
    for s in range(sequences):
        seq = root / f"seq_{s:05d}"
        (seq / "rgb").mkdir(parents=True, exist_ok=True)
        (seq / "depth").mkdir(parents=True, exist_ok=True)
        for i in range(frames):
            (rgb, depth), (fx, fy, cx, cy) = render(size, size, rng)
            cv2.imwrite(str(seq / "rgb" / f"{i:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(seq / "depth" / f"{i:06d}.png"),
                        np.round(depth / DEPTH_SCALE_MM).astype(np.uint16))
        meta = {"width": size, "height": size, "fx": fx, "fy": fy, "cx": cx, "cy": cy,
                "depth_scale_mm": DEPTH_SCALE_MM, "fps": 10.0, "level": level, "seed": seed}
        (seq / "meta.yaml").write_text(yaml.safe_dump(meta))
        (seq / "poses.txt").write_text("".join(f"{i / 10:.3f} 0 0 0 0 0 0 1\n" for i in range(frames)))
    (root / "dataset.yaml").write_text(yaml.safe_dump({"level": level, "seed": seed, "sequences": sequences,
                                                        "frames": frames}))
    return root


# -- the scenes themselves are checked against their closed forms -------------------------------------------
def test_plane_depth_is_planar_and_image_darkens_with_range():
    (rgb, depth), (fx, fy, cx, cy) = plane_frame(32, 32, np.random.default_rng(3))
    v, u = np.mgrid[0:32, 0:32]
    X = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1).reshape(-1, 3)
    # all back-projected points satisfy n . X = dist: fit a plane, residual ~ 0
    A = np.c_[X, -np.ones(len(X))]
    residual = np.linalg.svd(A, compute_uv=False)[-1] / np.sqrt(len(X))
    assert residual < 1e-4 * depth.mean()
    rng_mm = np.linalg.norm(X, axis=1)
    gray = rgb[..., 0].reshape(-1).astype(float)
    lit = gray < 255  # unsaturated pixels
    assert np.corrcoef(gray[lit], rng_mm[lit])[0, 1] < -0.5


def test_tube_points_lie_on_the_cylinder():
    rng = np.random.default_rng(5)
    (rgb, depth), (fx, fy, cx, cy) = tube_frame(32, 32, rng)
    rng2 = np.random.default_rng(5)  # replay the draws to recover radius, axis and offset
    radius = rng2.uniform(12.0, 20.0)
    a = np.array([rng2.uniform(-0.3, 0.3), rng2.uniform(-0.3, 0.3), 1.0])
    a /= np.linalg.norm(a)
    p0 = np.array([rng2.uniform(-0.5, 0.5), rng2.uniform(-0.5, 0.5), 0.0]) * radius
    v, u = np.mgrid[0:32, 0:32]
    valid = depth > 0
    assert valid.mean() > 0.5
    X = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)[valid]
    q = X - p0
    dist_to_axis = np.linalg.norm(q - (q @ a)[:, None] * a, axis=1)
    np.testing.assert_allclose(dist_to_axis, radius, rtol=1e-4)


def test_written_dataset_layout(tmp_path):
    import cv2

    root = write_dataset(tmp_path / "d", "L2", sequences=2, frames=3, size=16, seed=2)
    assert yaml.safe_load((root / "dataset.yaml").read_text())["level"] == "L2"
    seq = root / "seq_00001"
    assert sorted(p.name for p in (seq / "rgb").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    raw = cv2.imread(str(seq / "depth" / "000002.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (16, 16)
    meta = yaml.safe_load((seq / "meta.yaml").read_text())
    assert meta["depth_scale_mm"] == DEPTH_SCALE_MM and meta["level"] == "L2"
