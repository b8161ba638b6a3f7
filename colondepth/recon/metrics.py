"""Surface accuracy of a reconstruction against a ground-truth mesh (both world frame, mm).

Both surfaces are sampled uniformly by area (``n_samples`` points each, fixed seed) and distances
are nearest-neighbour distances between the sample sets (``scipy.spatial.cKDTree``):

- ``accuracy_mm``: mean distance from reconstructed samples to the ground truth (lower is better);
- ``completeness_mm``: mean distance from ground-truth samples to the reconstruction;
- ``chamfer_mm``: the mean of the two, ``(accuracy + completeness) / 2`` (one-sided means, not squared);
- ``precision@t`` / ``recall@t``: fraction of reconstructed / ground-truth samples within ``t`` mm of
  the other surface; ``fscore@t = 2 P R / (P + R)``, for ``t`` = 1 mm and 2 mm by default.

Sampling sets a floor: two independent samplings of the *same* surface are about
``0.5 / sqrt(samples per mm^2)`` mm apart on average (0.11 mm at the default 20 per mm^2).

The ground-truth colon is usually much larger than what a sequence saw; pass only its observed part
(:meth:`colondepth.recon.coverage.CoverageResult.observed_mesh`) to measure the reconstruction of
what was seen, and the whole mesh to include what was missed.
"""

from __future__ import annotations

import numpy as np

from colondepth.errors import UserError


def sample_surface(mesh, n: int, seed: int = 0) -> np.ndarray:
    """``(n, 3)`` points sampled uniformly by area on ``mesh`` (deterministic for ``seed``)."""
    import trimesh

    if mesh is None or len(mesh.faces) == 0 or mesh.area <= 0:
        raise UserError("surface metrics need a mesh with faces of positive area; the mesh is empty")
    pts, _ = trimesh.sample.sample_surface(mesh, int(n), seed=seed)
    return np.asarray(pts, dtype=np.float64)


def surface_metrics(pred_mesh, gt_mesh, thresholds_mm=(1.0, 2.0), n_samples: int | None = None,
                    samples_per_mm2: float = 20.0, max_samples: int = 200_000, seed: int = 0) -> dict:
    """Accuracy, completeness, Chamfer distance and F-scores (see module doc); all lengths in mm.

    Each surface gets ``n_samples`` points, or by default ``samples_per_mm2`` per mm^2 of its area
    (at least 10 000, at most ``max_samples``): a sampling floor of about 0.11 mm.
    """
    from scipy.spatial import cKDTree

    def count(mesh):
        if n_samples is not None:
            return int(n_samples)
        return int(np.clip(samples_per_mm2 * float(mesh.area), 10_000, max_samples))

    p = sample_surface(pred_mesh, count(pred_mesh), seed)
    g = sample_surface(gt_mesh, count(gt_mesh), seed + 1)
    d_pg, _ = cKDTree(g).query(p)
    d_gp, _ = cKDTree(p).query(g)
    out = {
        "accuracy_mm": float(d_pg.mean()),
        "completeness_mm": float(d_gp.mean()),
        "chamfer_mm": float(0.5 * (d_pg.mean() + d_gp.mean())),
        "n_samples_reconstruction": int(len(p)),
        "n_samples_ground_truth": int(len(g)),
    }
    for t in thresholds_mm:
        prec = float((d_pg <= t).mean())
        rec = float((d_gp <= t).mean())
        f = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        key = f"{t:g}mm"
        out[f"precision@{key}"] = prec
        out[f"recall@{key}"] = rec
        out[f"fscore@{key}"] = f
    return out
