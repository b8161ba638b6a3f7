"""Export a trained checkpoint as the shipped default model (``data/default_model.pt``).

Keeps the weights, the model card and the resolved curriculum; drops the optimizer/RNG state (only
``--resume`` needs it). The card gets a ``default_model`` entry recording how the model was made: the
training command from the card, this export command, and the source checkpoint.

    python benchmarks/export_default_model.py runs/default_model/checkpoints/final.pt data/default_model.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_MB = 30.0


def main(argv=None) -> int:
    import torch

    from colondepth.io import atomic_path
    from colondepth.train.checkpoint import load_checkpoint, read_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="final.pt of a training run")
    ap.add_argument("out", nargs="?", default=str(REPO / "data" / "default_model.pt"))
    args = ap.parse_args(argv)

    payload = read_checkpoint(args.checkpoint)
    card = dict(payload["card"])
    card["default_model"] = {
        "trained_with": card.get("command", ""),
        "exported_with": "python benchmarks/export_default_model.py " + " ".join(
            [str(Path(args.checkpoint)), str(Path(args.out))]),
        "source_checkpoint": str(Path(args.checkpoint)),
    }
    payload = dict(payload, card=card, training=None)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    load_checkpoint(out)  # proves it loads with weights_only=True and matches its card
    mb = out.stat().st_size / 2**20
    print(f"wrote {out} ({mb:.2f} MB), step {card.get('step')}, curriculum {card.get('curriculum')}")
    if mb > MAX_MB:
        print(f"error: {out} is {mb:.1f} MB, over the {MAX_MB:.0f} MB budget for shipped files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
