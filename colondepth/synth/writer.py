"""Write the on-disk dataset layout (``docs/dataset_format.md``): PNGs, poses, meta, mesh, video.

Every file is written into a sequence's temporary folder, which
:func:`colondepth.io.atomic_dir` renames to ``seq_XXXXX`` only when the sequence is complete.
All text is produced deterministically (fixed float formats, fixed key order), so the same seed
gives byte-identical PNG, YAML, TUM and PLY files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from colondepth.io import atomic_write_text

#: Version of the on-disk layout written into dataset.yaml and meta.yaml.
DATASET_FORMAT_VERSION = 1
DATASET_FORMAT = "colondepth-synthetic"


def frame_name(i: int) -> str:
    """``000042.png`` for frame 42."""
    return f"{i:06d}.png"


def seq_name(i: int) -> str:
    """``seq_00042`` for sequence 42."""
    return f"seq_{i:05d}"


def encode_depth(depth_mm: np.ndarray, depth_scale_mm: float) -> np.ndarray:
    """``(H, W) float`` mm -> ``(H, W) uint16`` with ``depth_mm = value * depth_scale_mm``, 0 = none.

    Depths that would overflow uint16 become 0 (invalid) rather than wrapping.

    >>> encode_depth(np.array([[0.0, 12.345, 1e9]]), 0.01).tolist()
    [[0, 1234, 0]]
    """
    d = np.asarray(depth_mm, dtype=np.float64)
    q = np.round(d / float(depth_scale_mm))
    valid = np.isfinite(d) & (d > 0) & (q <= 65535)
    return np.where(valid, np.maximum(q, 1), 0).astype(np.uint16)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write ``(H, W, 3) uint8`` RGB or ``(H, W) uint16``/``uint8`` single-channel as PNG (OpenCV)."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 3:
        if img.dtype != np.uint8 or img.shape[2] != 3:
            raise ValueError(f"RGB PNG needs (H, W, 3) uint8, got {img.shape} {img.dtype}")
        img = img[..., ::-1]  # RGB -> BGR for OpenCV
        strategy = cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY
    else:
        strategy = cv2.IMWRITE_PNG_STRATEGY_RLE
    # PNG encoding is the largest cost after rendering: a fixed Paeth filter (instead of trying every
    # filter per row) with a fast zlib strategy is several times quicker at a similar file size.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, strategy,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
    if not cv2.imwrite(str(path), np.ascontiguousarray(img), params):
        raise OSError(f"could not write {path}")


def dump_yaml(path: Path, data: dict) -> None:
    """Atomically write ``data`` as block-style YAML with the given key order."""
    import yaml

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))


def write_mesh_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY with float32 vertices (mm, world) and int32 triangle faces.

    Written by hand (not ``trimesh.export``) so the bytes depend only on the geometry.
    """
    v = np.asarray(vertices, dtype="<f4")
    f = np.asarray(faces, dtype="<i4")
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment ColonDepth synthetic colon, world frame, millimetres\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    face_rec = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = f
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(face_rec.tobytes())


class BackgroundWriter:
    """Runs file-encoding calls (PNG, video) in one background thread, in submission order.

    PNG and H.264 encoders release the GIL, so encoding overlaps with rendering the next frame.
    At most ``max_pending`` calls wait; :meth:`close` waits for all and re-raises the first error.
    """

    def __init__(self, max_pending: int = 8):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="colondepth-writer")
        self._pending: list = []
        self._max = int(max_pending)

    def submit(self, fn, *args) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._max:
            self._pending.pop(0).result()

    def wait(self) -> None:
        """Block until every submitted call has finished; re-raise the first error."""
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


class VideoWriter:
    """H.264 mp4 of RGB frames (PyAV, libx264, yuv420p); odd sizes are padded by one pixel.

    The encoder runs single-threaded with the ``veryfast`` preset: the video is a preview of the
    PNG frames (which are the data), and one thread keeps parallel workers from oversubscribing.
    """

    def __init__(self, path: Path, fps: float, crf: int = 20):
        import av
        from fractions import Fraction

        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=Fraction(float(fps)).limit_denominator(1001))
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"preset": "veryfast", "crf": str(int(crf))}
        self._stream.thread_count = 1
        self._size = None

    def write(self, rgb: np.ndarray) -> None:
        """Append one ``(H, W, 3) uint8`` frame."""
        import av

        h, w = rgb.shape[:2]
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._size is None:
            self._size = rgb.shape[:2]
            self._stream.height, self._stream.width = self._size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
