"""Average the depth weights of checkpoints of one run (stochastic weight averaging over its snapshots).

    python benchmarks/average_checkpoints.py OUT.pt RUN/snap_1000.pt RUN/snap_1500.pt ... [--label NAME]

All inputs must hold the same architecture (their model cards' ``model`` entries are compared).  Floating
point tensors are averaged, integer buffers (counters) taken from the last input.  The card of the last
input is kept, with an ``averaged_from`` entry listing the inputs (by file name and step).  The result is a
model bundle without training state or pose network; choose it like any candidate, on the validation split
(``select_model.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def average(paths: list[Path], out: Path) -> Path:
    import torch

    from colondepth.models.bundle import build_depth, read_bundle, save_bundle

    payloads = [read_bundle(p) for p in paths]
    arch = payloads[0]["card"]["model"]
    for p, pl in zip(paths, payloads):
        if pl["card"]["model"] != arch:
            raise SystemExit(f"{p}: another architecture than {paths[0]}; average checkpoints of one run only")
    states = [pl["model_state"] for pl in payloads]
    avg = {}
    for k, v in states[-1].items():
        avg[k] = torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
    last = dict(payloads[-1])
    last["model_state"] = avg
    card = dict(last["card"])
    card["averaged_from"] = [{"file": Path(p).name, "step": pl["card"].get("step")} for p, pl in zip(paths, payloads)]
    net = build_depth(dict(last, card=card), out)
    return save_bundle(out, net, card, last.get("config"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("checkpoints", type=Path, nargs="+")
    args = ap.parse_args(argv)
    if len(args.checkpoints) < 2:
        raise SystemExit("give at least two checkpoints to average")
    average(args.checkpoints, args.out)
    print(f"wrote {args.out} (mean of {len(args.checkpoints)} checkpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
