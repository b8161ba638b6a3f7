"""Offscreen rendering with pyrender: the only module that imports pyrender or sees OpenGL.

Conventions crossed here, once:

- Poses: callers pass ``world_from_cam`` (OpenCV camera: +X right, +Y down, +Z forward, mm).
  pyrender's camera looks down -Z with +Y up, so ``world_from_cam_gl = world_from_cam @ CV_FROM_GL``.
- Pixels: pyrender's ``IntrinsicsCamera`` puts the principal point on pixel *edges*
  (its projection maps ``x/z`` to ``fx x/z + cx`` measured from the image's left edge), while our
  ``cx`` is measured from the centre of the top-left pixel, so it receives ``cx + 0.5, cy + 0.5``.
  ``tests/test_synth_render.py`` pins this with a tilted plane against the closed form.
- Depth: pyrender returns z-depth in scene units (mm here) and 0 where nothing was hit; znear/zfar
  are always passed in mm (pyrender's defaults assume metres).
- Textures: pyrender flips image rows on upload, so texture row 0 ends up at ``v = 1``; we pass
  ``flipud`` so that row 0 is ``v = 0`` as :mod:`colondepth.synth.appearance` defines.

OpenGL platform: ``PYOPENGL_PLATFORM`` must be chosen before pyrender is imported; we set it to
``osmesa`` (CPU, exact depth at pixel centres) unless the user already chose one (e.g. ``egl``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from colondepth.conventions import CV_FROM_GL
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics

#: Debian packages that provide offscreen OpenGL for pyrender.
OPENGL_PACKAGES = "libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libopengl0"

_PYRENDER = None


def import_pyrender():
    """Import pyrender after choosing the OpenGL platform; UserError naming the packages on failure."""
    global _PYRENDER
    if _PYRENDER is None:
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        try:
            import pyrender
        except Exception as exc:  # ImportError, OSError from a missing libOSMesa, ...
            raise UserError(_opengl_message(exc)) from None
        _PYRENDER = pyrender
    return _PYRENDER


def _opengl_message(exc: BaseException) -> str:
    platform = os.environ.get("PYOPENGL_PLATFORM", "osmesa")
    return (
        f"offscreen OpenGL is not available (PYOPENGL_PLATFORM={platform}: {type(exc).__name__}: {exc}); "
        f"install it with 'apt-get install -y {OPENGL_PACKAGES}', or set PYOPENGL_PLATFORM=egl on a GPU machine"
    )


def world_from_cam_gl(world_from_cam: np.ndarray) -> np.ndarray:
    """``(4, 4)`` pose of the OpenGL camera (looks down -Z, +Y up) for an OpenCV ``world_from_cam``.

    >>> world_from_cam_gl(np.eye(4))[:3, :3].tolist()
    [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]
    """
    return np.asarray(world_from_cam, dtype=np.float64) @ CV_FROM_GL


@dataclass
class Material:
    """Surface material: texture rows are ``v`` (angle), columns ``u``; see :mod:`.appearance`.

    ``albedo_srgb8 (rows, cols, 3) uint8`` or ``None`` for a uniform ``base_color``;
    ``roughness_map (rows, cols) [0, 1]`` optional; ``roughness``/``metallic`` factors.
    """

    albedo_srgb8: np.ndarray | None = None
    base_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    roughness: float = 0.8
    metallic: float = 0.0
    roughness_map: np.ndarray | None = None


@dataclass
class Light:
    """A light that moves with the camera: ``kind`` 'point' or 'spot' (cone along +Z of the camera).

    ``offsets_mm (n, 3)``: positions of the ``n`` light guides in the OpenCV camera frame (mm); the
    default is one light at the optical centre.  ``intensity`` is the total, shared equally between
    the guides.  ``spot_softness`` is the inner / outer cone angle of a spot (its fall-off profile).
    """

    kind: str = "point"
    intensity: float = 3000.0
    spot_angle_deg: float = 70.0
    ambient: float = 0.0
    offsets_mm: tuple = ((0.0, 0.0, 0.0),)
    spot_softness: float = 0.5


class SceneRenderer:
    """One OpenGL context and one scene for a sequence: set a mesh once, render many poses.

    Parameters
    ----------
    intrinsics : PinholeIntrinsics
        OpenCV pinhole camera (pixel centres at integers); ``intrinsics.size`` is the output size.
    znear_mm, zfar_mm : float
        Clip planes in millimetres.
    """

    def __init__(self, intrinsics: PinholeIntrinsics, znear_mm: float, zfar_mm: float):
        pyrender = import_pyrender()
        self._pr = pyrender
        self.intrinsics = intrinsics
        h, w = intrinsics.size.as_hw()
        try:
            self._renderer = pyrender.OffscreenRenderer(viewport_width=w, viewport_height=h)
        except Exception as exc:
            raise UserError(_opengl_message(exc)) from None
        self._camera = pyrender.IntrinsicsCamera(
            fx=intrinsics.fx, fy=intrinsics.fy,
            cx=intrinsics.cx + 0.5, cy=intrinsics.cy + 0.5,  # pixel-centre -> pyrender pixel-edge origin
            znear=znear_mm, zfar=zfar_mm,
        )
        self._scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.zeros(3))
        self._cam_node = self._scene.add(self._camera, pose=np.eye(4))
        self._light_nodes: list = []
        self._light_offsets: list = []
        self._mesh_node = None

    # -- scene ---------------------------------------------------------------------------------
    def set_mesh(self, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None,
                 uv: np.ndarray | None = None, material: Material | None = None) -> None:
        """Replace the scene mesh. ``vertices (V, 3)`` mm world frame; ``faces (F, 3)`` wound towards the
        viewer; ``normals (V, 3)``; ``uv (V, 2)`` texture coordinates (needed with a texture)."""
        pr = self._pr
        material = material or Material()
        tex = None
        if material.albedo_srgb8 is not None:
            if uv is None:
                raise ValueError("a textured material needs uv coordinates")
            tex = pr.Texture(source=np.ascontiguousarray(np.flipud(material.albedo_srgb8)), source_channels="RGB")
        mr_tex = None
        metallic, roughness = float(material.metallic), float(material.roughness)
        if material.roughness_map is not None:
            # pyrender's shader reads roughness from R and metallic from G of this texture (not glTF's
            # G = roughness, B = metallic), so it is packed the way pyrender reads it; the factors of 1
            # make the texture values the material's values.  tests/test_synth_render.py pins this.
            rm = np.zeros(material.roughness_map.shape + (3,), dtype=np.uint8)
            rm[..., 0] = np.round(np.clip(material.roughness_map, 0, 1) * 255)  # pyrender: R = roughness
            rm[..., 1] = np.round(np.clip(metallic, 0, 1) * 255)  # pyrender: G = metallic
            mr_tex = pr.Texture(source=np.ascontiguousarray(np.flipud(rm)), source_channels="RGB")
            metallic, roughness = 1.0, 1.0
        mat = pr.MetallicRoughnessMaterial(
            baseColorFactor=np.r_[np.asarray(material.base_color, dtype=np.float64), 1.0],
            baseColorTexture=tex,
            metallicFactor=metallic,
            roughnessFactor=roughness,
            metallicRoughnessTexture=mr_tex,
            doubleSided=False,
        )
        prim = pr.Primitive(
            positions=np.asarray(vertices, dtype=np.float32),
            normals=None if normals is None else np.asarray(normals, dtype=np.float32),
            texcoord_0=None if uv is None else np.asarray(uv, dtype=np.float32),
            indices=np.asarray(faces, dtype=np.uint32),
            material=mat,
            mode=4,  # GL_TRIANGLES
        )
        if self._mesh_node is not None:
            self._scene.remove_node(self._mesh_node)
        self._mesh_node = self._scene.add(pr.Mesh([prim]))

    def set_light(self, light: Light) -> None:
        """Replace the light(s); they move with the camera at their ``offsets_mm``."""
        pr = self._pr
        for node in self._light_nodes:
            self._scene.remove_node(node)
        offsets = np.asarray(light.offsets_mm, dtype=np.float64).reshape(-1, 3)
        each = float(light.intensity) / len(offsets)
        self._light_nodes, self._light_offsets = [], []
        for off in offsets:
            if light.kind == "point":
                lt = pr.PointLight(color=np.ones(3), intensity=each)
            elif light.kind == "spot":
                outer = np.radians(light.spot_angle_deg)
                lt = pr.SpotLight(color=np.ones(3), intensity=each,
                                  innerConeAngle=float(np.clip(light.spot_softness, 0.0, 0.99)) * outer,
                                  outerConeAngle=outer)
            else:
                raise ValueError(f"unknown light kind {light.kind!r}")
            cam_from_light = np.eye(4)
            cam_from_light[:3, 3] = off
            self._light_offsets.append(cam_from_light)
            self._light_nodes.append(self._scene.add(lt, pose=np.eye(4)))
        self._scene.ambient_light = np.full(3, float(light.ambient))

    # -- render --------------------------------------------------------------------------------
    def render(self, world_from_cam: np.ndarray, flat: bool = False,
               depth_only: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
        """Render one view.

        Parameters
        ----------
        world_from_cam : (4, 4) float
            OpenCV camera pose, mm.
        flat : bool
            Unlit: the colour is the texture/base colour as stored (sRGB-encoded), independent of view.
        depth_only : bool
            Skip the colour pass.

        Returns
        -------
        rgb : (H, W, 3) uint8, display-encoded (pyrender applies gamma 2.2 to lit renders; flat renders
            are the stored sRGB texture values), or None when ``depth_only``
        depth_mm : (H, W) float32 z-depth in mm along the camera's +Z, 0 where no surface
        """
        pose_gl = world_from_cam_gl(world_from_cam)
        self._scene.set_pose(self._cam_node, pose_gl)
        for node, cam_from_light in zip(self._light_nodes, self._light_offsets):
            # offset in the OpenCV camera frame, then the same OpenCV -> OpenGL axis flip as the camera
            self._scene.set_pose(node, world_from_cam_gl(np.asarray(world_from_cam) @ cam_from_light))
        flags = self._pr.RenderFlags.NONE
        if depth_only:
            depth = self._renderer.render(self._scene, flags=self._pr.RenderFlags.DEPTH_ONLY)
            return None, np.asarray(depth, dtype=np.float32)
        if flat:
            flags |= self._pr.RenderFlags.FLAT
        color, depth = self._renderer.render(self._scene, flags=flags)
        return np.asarray(color, dtype=np.uint8), np.asarray(depth, dtype=np.float32)

    def close(self) -> None:
        """Free the OpenGL context (safe to call twice)."""
        if getattr(self, "_renderer", None) is not None:
            self._renderer.delete()
            self._renderer = None

    def __enter__(self) -> "SceneRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
