"""Memory of ``colondepth reconstruct --video`` against video length: the sample video looped.

Usage::

    .venv/bin/python benchmarks/bench_stream.py [--loops 1 5] [--work out/bench_stream]
        [--shared-data ../shared/data] [--json benchmarks/results/stream.json]

The real colonoscopy sample (``real_colon_video/colonoscopy_side_by_side.mp4``, 600 frames, its left
192x192 half) is re-encoded ``N`` times back to back (H.264), and each looped video is reconstructed by
the product's command in a fresh process with the default model's depth and pose networks
(``--crop 0 0 192 192 --depth predicted --poses predicted``).  For each length the peak resident memory
of that process (``ru_maxrss``), the wall time and the TSDF's own memory (``report.json`` -> ``volume``
-> ``memory_mb``, allocated capacity, and ``used_mb``; the map grows with the surface explored, by design),
its blocks and the mesh's faces are written to the JSON.  Streaming
works when the peak memory minus the TSDF does not grow with the number of frames.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEO = Path("real_colon_video") / "colonoscopy_side_by_side.mp4"


def loop_video(src: Path, dst: Path, loops: int) -> int:
    """Write ``src`` ``loops`` times back to back into ``dst`` (H.264, same size and rate); return frames."""
    import av

    if dst.is_file():
        with av.open(str(dst)) as c:
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size > 0)
    tmp = dst.with_suffix(".part.mp4")
    n = 0
    with av.open(str(src)) as first:
        rate = first.streams.video[0].average_rate
    with av.open(str(tmp), "w") as out:
        stream = None
        for _ in range(loops):
            with av.open(str(src)) as c:
                for frame in c.decode(c.streams.video[0]):
                    img = frame.to_ndarray(format="rgb24")
                    if stream is None:
                        stream = out.add_stream("libx264", rate=rate)
                        stream.width, stream.height, stream.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                        stream.options = {"crf": "18"}
                    for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        out.mux(pkt)
                    n += 1
        for pkt in stream.encode():
            out.mux(pkt)
    tmp.rename(dst)
    return n


def run_reconstruct(video: Path, out: Path) -> dict:
    """Run the command in a child process; ``{seconds, peak_rss_mb, tsdf_mb, frames}``."""
    argv = [sys.executable, "-m", "colondepth.cli", "reconstruct", "--video", str(video), "--crop", "0", "0", "192",
            "192", "--depth", "predicted", "--poses", "predicted", "--out", str(out), "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 4):  # 4: an incomplete mesh is reported, the run still measured
        raise SystemExit(f"reconstruct failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    if peak < before:
        raise SystemExit("ru_maxrss of children went down; run each length in a fresh benchmark process")
    report = json.loads((out / "report.json").read_text())
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 1024.0, 1),
            "tsdf_mb": report["volume"]["memory_mb"], "tsdf_used_mb": report["volume"]["used_mb"],
            "blocks": report["volume"]["blocks"], "mesh_faces": report["mesh"]["faces"],
            "frames": report["frames"]["integrated"],
            "fps": round(report["frames"]["integrated"] / seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loops", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--work", default=str(REPO / "out" / "bench_stream"))
    ap.add_argument("--shared-data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "stream.json"))
    args = ap.parse_args(argv)
    src = Path(args.shared_data) / VIDEO
    if not src.is_file():
        raise SystemExit(f"{src}: sample video not found; pass --shared-data with real_colon_video/ inside")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    # ru_maxrss of children is a maximum over all children so far: measure the lengths in increasing order,
    # each in its own benchmark process, so every row is that length's own peak
    for loops in sorted(args.loops):
        video = work / f"loop{loops}.mp4"
        n = loop_video(src, video, loops)
        if len(args.loops) > 1:
            code = subprocess.run([sys.executable, __file__, "--loops", str(loops), "--work", str(work),
                                   "--shared-data", args.shared_data, "--json", str(work / f"row{loops}.json")],
                                  cwd=REPO).returncode
            if code:
                return code
            row = json.loads((work / f"row{loops}.json").read_text())["rows"][0]
        else:
            row = {"loops": loops, "video_frames": n, **run_reconstruct(video, work / f"recon{loops}")}
        rows.append(row)
        print(f"{loops} loop(s), {row['frames']} frames: peak {row['peak_rss_mb']:.0f} MB (TSDF {row['tsdf_mb']:.0f} MB), "
              f"{row['seconds']:.0f} s, {row['fps']:.1f} frames/s", flush=True)
    doc = {"benchmark": "stream",
           "command": "python benchmarks/bench_stream.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "video": str(VIDEO), "threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
