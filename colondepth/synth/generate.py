"""Generate a synthetic colonoscopy dataset: recipe -> colons -> rendered sequences on disk.

Determinism: sequence ``i`` of a dataset with seed ``S`` uses the seed
``SeedSequence([S, i])``, split into independent streams for the recipe ranges, the geometry,
the textures, the trajectory and the sensor noise.  A sequence therefore does not depend on
which shard, worker or run produced it.

Resume: each sequence is written to a hidden temporary folder and renamed to ``seq_XXXXX`` when
complete; a rerun skips existing ``seq_XXXXX`` folders and removes stale temporary folders of
the sequences it owns.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from colondepth import __version__
from colondepth.conventions import CONVENTIONS_VERSION, ImageSize
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.io import atomic_dir, ensure_output_dir
from colondepth.synth.recipe import Recipe, as_recipe, recipe_to_dict, sample_recipe
from colondepth.synth.writer import (
    DATASET_FORMAT, DATASET_FORMAT_VERSION, BackgroundWriter, VideoWriter, dump_yaml, encode_depth, frame_name,
    seq_name,
    write_mesh_ply, write_png,
)


def sequence_seed(seed: int, index: int) -> int:
    """The 32-bit seed of sequence ``index`` in a dataset made with ``seed``.

    >>> sequence_seed(0, 1) == sequence_seed(0, 1) != sequence_seed(0, 2)
    True
    """
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


class SequenceScene:
    """Everything sampled for one sequence: recipe values, colon, textures, trajectory, intrinsics."""

    def __init__(self, recipe: Recipe, seq_seed: int, frames: int):
        from colondepth.synth.appearance import make_textures
        from colondepth.synth.colon import build_colon
        from colondepth.synth.trajectory import make_trajectory

        from colondepth.synth.randomise import apply_randomisation

        # children are independent of how many are spawned: adding one never shifts the others
        streams = np.random.SeedSequence(seq_seed).spawn(7)
        rng_params, rng_geom, rng_tex, rng_traj, self._noise_seed, rng_look, self._exposure_seed = streams
        self.seed = int(seq_seed)
        self.recipe = recipe
        self.params, self.look = apply_randomisation(sample_recipe(recipe, np.random.default_rng(rng_params)),
                                                     np.random.default_rng(rng_look))
        p = self.params
        self.size = ImageSize(p.camera.height, p.camera.width)
        self.intrinsics = PinholeIntrinsics.from_fov(self.size, float(p.camera.fov_deg))
        self.geometry = build_colon(p, np.random.default_rng(rng_geom))
        self.textures = make_textures(p, self.geometry, np.random.default_rng(rng_tex))
        self.trajectory = make_trajectory(p, self.geometry, frames, np.random.default_rng(rng_traj))
        self.frames = int(frames)

    @property
    def world_from_cam(self) -> np.ndarray:
        """``(F, 4, 4)`` OpenCV camera poses, mm."""
        return self.trajectory["world_from_cam"]

    def noise_rng(self) -> np.random.Generator:
        return np.random.default_rng(self._noise_seed)

    def exposure_rng(self) -> np.random.Generator:
        return np.random.default_rng(self._exposure_seed)


class FrameRenderer:
    """Renders the frames of one :class:`SequenceScene` with one reused OpenGL context."""

    def __init__(self, scene: SequenceScene):
        from colondepth.synth.appearance import fov_mask, vignetting_map
        from colondepth.synth.render import Light, Material, SceneRenderer

        p = scene.params
        self.scene = scene
        self.renderer = SceneRenderer(scene.intrinsics, p.camera.znear_mm, p.camera.zfar_mm)
        g = scene.geometry
        self.renderer.set_mesh(
            g.render_vertices, g.render_faces, normals=g.render_normals, uv=g.render_uv,
            material=Material(
                albedo_srgb8=scene.textures.albedo_srgb8,
                roughness=float(p.appearance.roughness),
                metallic=float(p.appearance.metallic),
                roughness_map=scene.textures.roughness if g.fluid_mask.any() else None,
            ),
        )
        look = scene.look
        self.headroom = 1.0 if p.appearance.flat_shading else float(p.light.headroom)
        self.renderer.set_light(Light(kind=p.light.kind, intensity=float(p.light.intensity) / self.headroom,
                                      spot_angle_deg=p.light.spot_angle_deg, ambient=p.light.ambient,
                                      offsets_mm=tuple(map(tuple, look.light_offsets_mm)),
                                      spot_softness=look.spot_softness))
        self.mask = fov_mask(scene.size, p.camera.fov_mask, p.camera.fov_mask_radius)
        self.vignetting = (vignetting_map(scene.size, float(p.light.vignetting)).astype(np.float32)
                           if p.light.vignetting > 0 else None)
        self.rng = scene.noise_rng()
        from colondepth.synth.randomise import frame_exposures

        # a stream of its own, so sequences without randomisation are unchanged
        self.exposures = frame_exposures(float(p.light.exposure), look, scene.frames,
                                         float(p.trajectory.smoothness_frames), scene.exposure_rng())

    def _blur_poses(self, t: int) -> list[np.ndarray]:
        from scipy.spatial.transform import Rotation, Slerp

        P = self.scene.world_from_cam
        n = int(self.scene.params.light.motion_blur_samples)
        if n <= 1 or t == 0:
            return [P[t]]
        shutter = float(self.scene.params.light.motion_blur_shutter)
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(P[t - 1:t + 1, :3, :3]))
        out = []
        for a in np.linspace(1.0 - shutter, 1.0, n):
            pose = np.eye(4)
            pose[:3, :3] = slerp([a]).as_matrix()[0]
            pose[:3, 3] = (1 - a) * P[t - 1, :3, 3] + a * P[t, :3, 3]
            out.append(pose)
        return out

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t`` -> ``(rgb (H, W, 3) uint8, depth_mm (H, W) float32, 0 = none)``."""
        from colondepth.synth.appearance import camera_response, decode_render
        from colondepth.synth.randomise import auto_exposure

        p = self.scene.params
        pose = self.scene.world_from_cam[t]
        if p.appearance.flat_shading:
            rgb, depth = self.renderer.render(pose, flat=True)
            if p.light.noise_std > 0:
                noisy = rgb / 255.0 + float(p.light.noise_std) * self.rng.standard_normal(rgb.shape)
                rgb = np.round(np.clip(noisy, 0, 1) * 255.0).astype(np.uint8)
        else:
            poses = self._blur_poses(t)
            acc = None
            for q in poses:  # the last sub-frame is the frame's own pose: its depth is kept
                color, depth = self.renderer.render(q)
                lin = decode_render(color, self.headroom)  # motion blur averages linear radiance
                acc = lin if acc is None else acc + lin
            if len(poses) > 1:
                acc /= np.float32(len(poses))
            look = self.scene.look
            exposure = auto_exposure(acc, float(self.exposures[t]), look, self.mask, self.vignetting)
            rgb = camera_response(acc, exposure=exposure, gamma=p.light.gamma, gain=self.vignetting,
                                  noise_std=float(p.light.noise_std), rng=self.rng,
                                  white_balance=look.white_balance if p.randomisation.enabled else None,
                                  blur_sigma_px=look.blur_sigma_px, jpeg_quality=look.jpeg_quality)
        if self.mask is not None:
            rgb = rgb * self.mask[..., None].astype(np.uint8)
            depth = np.where(self.mask, depth, 0.0).astype(np.float32)
        return rgb, depth

    def close(self) -> None:
        self.renderer.close()


def sequence_meta(scene: SequenceScene, index: int) -> dict:
    """The meta.yaml mapping of one sequence (see docs/dataset_format.md)."""
    p = scene.params
    k = scene.intrinsics
    return {
        "format": DATASET_FORMAT,
        "format_version": DATASET_FORMAT_VERSION,
        "width": int(k.size.width),
        "height": int(k.size.height),
        "fx": float(k.fx),
        "fy": float(k.fy),
        "cx": float(k.cx),
        "cy": float(k.cy),
        "depth_scale_mm": float(p.camera.depth_scale_mm),
        "fps": float(p.camera.fps),
        "level": p.level,
        "seed": int(scene.seed),
        "sequence_index": int(index),
        "num_frames": int(scene.frames),
        "znear_mm": float(p.camera.znear_mm),
        "zfar_mm": float(p.camera.zfar_mm),
        "fov_mask": p.camera.fov_mask,
        "flat_shading": bool(p.appearance.flat_shading),
        "params": recipe_to_dict(p),
        "look": scene.look.to_dict(),
    }


def write_sequence(recipe: Recipe, index: int, seed: int, frames: int, out_dir: Path,
                   on_frame: Optional[Callable[[], None]] = None, video: bool = True) -> Path:
    """Generate sequence ``index`` into ``out_dir/seq_XXXXX`` atomically and return that path."""
    from colondepth.datasets.tum import write_tum

    final = Path(out_dir) / seq_name(index)
    scene = SequenceScene(recipe, sequence_seed(seed, index), frames)
    fps = float(scene.params.camera.fps)
    with atomic_dir(final) as tmp:
        (tmp / "rgb").mkdir()
        (tmp / "depth").mkdir()
        fr = FrameRenderer(scene)
        vw = VideoWriter(tmp / "video.mp4", fps) if video else None
        bg = BackgroundWriter()
        scale = scene.params.camera.depth_scale_mm
        try:
            for t in range(frames):
                rgb, depth = fr.render(t)
                bg.submit(write_png, tmp / "rgb" / frame_name(t), rgb)
                bg.submit(write_png, tmp / "depth" / frame_name(t), encode_depth(depth, scale))
                if vw is not None:
                    bg.submit(vw.write, rgb)
                if on_frame is not None:
                    on_frame()
        finally:
            try:
                bg.close()
            finally:
                fr.close()
                if vw is not None:
                    vw.close()
        if fr.mask is not None:
            write_png(tmp / "fov_mask.png", fr.mask.astype(np.uint8) * 255)
        write_tum(tmp / "poses.txt", np.arange(frames) / fps, scene.world_from_cam)
        write_mesh_ply(tmp / "mesh.ply", scene.geometry.mesh.vertices, scene.geometry.mesh.faces)
        dump_yaml(tmp / "meta.yaml", sequence_meta(scene, index))
        _make_readable(tmp)
    return final


def _make_readable(folder: Path) -> None:
    """Temporary files/folders are created private; a finished dataset is world-readable."""
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def dataset_info(recipe: Recipe, seed: int, sequences: int, frames: int) -> dict:
    """The dataset.yaml mapping (resolved recipe, level, seed, versions, counts)."""
    return {
        "format": DATASET_FORMAT,
        "format_version": DATASET_FORMAT_VERSION,
        "generator": f"colondepth {__version__}",
        "conventions_version": CONVENTIONS_VERSION,
        "level": recipe.level,
        "seed": int(seed),
        "sequences": int(sequences),
        "frames_per_sequence": int(frames),
        "height": int(recipe.camera.height),
        "width": int(recipe.camera.width),
        "recipe": recipe_to_dict(recipe),
    }


def _worker(task: tuple) -> int:
    recipe_dict, index, seed, frames, out_dir, video = task
    write_sequence(Recipe.model_validate(recipe_dict), index, seed, frames, Path(out_dir), video=video)
    return index


def _parse_shard(shard) -> tuple[int, int]:
    if isinstance(shard, str):
        try:
            i, n = (int(x) for x in shard.split("/"))
        except ValueError:
            raise UserError(f"--shard {shard}: expected I/N, e.g. 0/4") from None
    else:
        i, n = (int(x) for x in shard)
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {i}/{n}: need 0 <= I < N")
    return i, n


def generate_dataset(recipe_path_or_obj, out_dir, sequences: int, frames: int, size=None, seed: int = 0,
                     workers: int = 1, shard=(0, 1), progress: bool = True, video: bool = True,
                     randomise: bool = False) -> Path:
    """Generate (or resume) a dataset and return its folder.

    Parameters
    ----------
    recipe_path_or_obj : Recipe, path to a recipe YAML, or a mapping
    out_dir : folder of the dataset (created); holds dataset.yaml and seq_XXXXX folders
    sequences, frames : number of sequences in the whole dataset, frames per sequence
    size : ImageSize, ``(height, width)`` or None for the recipe's size
    seed : dataset seed; sequence ``i`` uses :func:`sequence_seed` ``(seed, i)``
    workers : processes (spawned; each renders with its own OpenGL context)
    shard : ``(I, N)`` or ``"I/N"``: only sequences with ``i % N == I`` are generated here
    progress : show a tqdm bar of frames
    video : also write video.mp4 (part of the layout; turn off only for throwaway data)
    randomise : turn on the recipe's ``randomisation`` block (:mod:`colondepth.synth.randomise`)
    """
    from tqdm import tqdm

    recipe = as_recipe(recipe_path_or_obj)
    if randomise:
        recipe = recipe.model_copy(update={"randomisation": recipe.randomisation.model_copy(update={"enabled": True})})
    if size is not None:
        h, w = size.as_hw() if isinstance(size, ImageSize) else (int(size[0]), int(size[1]))
        if h < 8 or w < 8:
            raise UserError(f"--size {h} {w}: images need at least 8x8 pixels")
        recipe = recipe.with_size(h, w)
    sequences, frames, workers = int(sequences), int(frames), int(workers)
    if sequences < 1 or frames < 1:
        raise UserError(f"--sequences {sequences} --frames {frames}: both must be at least 1")
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    si, sn = _parse_shard(shard)
    out = ensure_output_dir(out_dir, "--out")
    _write_dataset_yaml(out, dataset_info(recipe, seed, sequences, frames))

    mine = [i for i in range(sequences) if i % sn == si]
    for i in mine:  # stale temporary folders from a killed run of the same shard
        for stale in out.glob(f".{seq_name(i)}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    todo = [i for i in mine if not (out / seq_name(i) / "meta.yaml").is_file()]
    bar = tqdm(total=len(todo) * frames, unit="frame", disable=not progress,
               desc=f"synth {recipe.level} {len(mine) - len(todo)}/{len(mine)} done")
    try:
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                write_sequence(recipe, i, seed, frames, out, on_frame=lambda: bar.update(1), video=video)
        else:
            import multiprocessing as mp

            tasks = [(recipe_to_dict(recipe), i, seed, frames, str(out), video) for i in todo]
            with mp.get_context("spawn").Pool(min(workers, len(todo))) as pool:
                for _ in pool.imap_unordered(_worker, tasks):
                    bar.update(frames)
    finally:
        bar.close()
    return out


def _write_dataset_yaml(out: Path, info: dict) -> None:
    import yaml

    path = out / "dataset.yaml"
    if path.is_file():
        try:
            old = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            old = None
        if old == info:
            return
        if isinstance(old, dict) and old.get("format") == DATASET_FORMAT:
            diff = sorted(k for k in info if old.get(k) != info[k])
            raise UserError(
                f"{path}: this folder holds a dataset made with different settings ({', '.join(diff)}); "
                "rerun with the same recipe/seed/--sequences/--frames/--size to resume, or choose another --out"
            )
        raise UserError(f"{path}: exists but is not a ColonDepth synthetic dataset; choose another --out")
    dump_yaml(path, info)
    path.chmod(0o644)


def time_frames(recipe: Recipe, frames: int, seed: int = 0, block: int = 10) -> dict:
    """Benchmark helper: time one sequence's frames two ways on the same scene and mesh.

    In blocks of ``block`` frames: first bare pyrender colour + depth renders of the block's poses,
    then the generator's full per-frame work for the same poses (renders incl. motion-blur
    sub-frames, camera response, depth encoding, and RGB/depth PNG + video encoding through the same
    background writer as :func:`write_sequence`, drained before the clock stops).  Alternating
    blocks keeps both timings under the same (shared) CPU load.

    Returns ``{"bare_s", "full_s"`` (wall clock), ``"bare_cpu_s", "full_cpu_s"`` (CPU time of all
    threads of this process, including the OSMesa rasteriser threads: steadier than wall clock on a
    shared machine), ``"setup_s"`` (colon, texture, trajectory, OpenGL context) and ``"triangles"``
    (render mesh)``}``.
    """
    import tempfile

    t0 = time.perf_counter()
    scene = SequenceScene(recipe, sequence_seed(seed, 0), frames)
    fr = FrameRenderer(scene)
    setup = time.perf_counter() - t0
    flat = bool(scene.params.appearance.flat_shading)
    scale = scene.params.camera.depth_scale_mm
    bare = full = bare_cpu = full_cpu = 0.0
    try:
        fr.render(0)  # warm-up: shader compilation, texture upload
        with tempfile.TemporaryDirectory() as d:
            vw = VideoWriter(Path(d) / "video.mp4", 30.0)
            bg = BackgroundWriter()
            for start in range(0, frames, block):
                ts = range(start, min(start + block, frames))
                t0, c0 = time.perf_counter(), time.process_time()
                for t in ts:
                    fr.renderer.render(scene.world_from_cam[t], flat=flat)
                t1, c1 = time.perf_counter(), time.process_time()
                for t in ts:
                    rgb, depth = fr.render(t)
                    bg.submit(write_png, Path(d) / f"rgb{t % 4}.png", rgb)
                    bg.submit(write_png, Path(d) / f"depth{t % 4}.png", encode_depth(depth, scale))
                    bg.submit(vw.write, rgb)
                bg.wait()
                t2, c2 = time.perf_counter(), time.process_time()
                bare += t1 - t0
                full += t2 - t1
                bare_cpu += c1 - c0
                full_cpu += c2 - c1
            bg.close()
            vw.close()
    finally:
        fr.close()
    return {"bare_s": bare, "full_s": full, "bare_cpu_s": bare_cpu, "full_cpu_s": full_cpu, "setup_s": setup,
            "triangles": int(len(scene.geometry.render_faces))}
