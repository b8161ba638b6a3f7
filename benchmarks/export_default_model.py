"""Export a trained checkpoint as the shipped default model (``data/default_model.pt``): a model bundle.

Keeps the depth weights, the model card and the resolved curriculum; drops the optimizer/RNG state (only
``--resume`` needs it).  ``--pose RUN/checkpoints/final.pt`` adds the pose network of a pose-only run
(``train_depth: false``) trained against exactly these depth weights (checked); ``--two-frame
RUN/checkpoints/final.pt`` adds the two-frame network of a ``two_frame`` run (``curricula/two_frame.yaml``).  The card gets a
``default_model`` entry recording how the model was made (the training command from the card, this export
command, the source checkpoints) and, with ``--pose``, a ``pose_network`` entry with that run's provenance.
``--colour grey`` ships the same weights with the network fed each frame's luminance alone
(``DepthNetConfig.colour``; chosen on validation by ``benchmarks/select_model.py``).  Exporting an exported model
again (e.g. ``data/default_model.pt`` onto itself with ``--colour``) keeps its recorded provenance and appends
this export command to it.

    python benchmarks/export_default_model.py runs/default_model/checkpoints/final.pt data/default_model.pt \
        [--pose runs/default_pose/checkpoints/final.pt] [--two-frame runs/two_frame/checkpoints/final.pt]
        [--colour grey]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_MB = 30.0


def _shown(path) -> str:
    """``path`` relative to the repository when inside it, else its file name (no machine-specific paths)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name


def main(argv=None) -> int:
    import torch

    from colondepth.models.bundle import build_depth, load_bundle, read_bundle, save_bundle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="final.pt of a training run")
    ap.add_argument("out", nargs="?", default=str(REPO / "data" / "default_model.pt"))
    ap.add_argument("--pose", default=None, help="final.pt of a pose-only run on these depth weights")
    ap.add_argument("--pose-trained-with", action="append", default=None, metavar="COMMAND",
                    help="the commands that reproduce the pose network, in order (default: the command in its card)")
    ap.add_argument("--two-frame", default=None, help="final.pt of a two_frame run whose two-frame network to ship")
    ap.add_argument("--trained-with", action="append", default=None, metavar="COMMAND",
                    help="the commands that reproduce the model, in order (default: the command in the card); "
                         "give them with repository-relative paths")
    ap.add_argument("--colour", choices=["rgb", "grey"], default=None,
                    help="what the network sees of each frame's colour (default: as the checkpoint's card says)")
    args = ap.parse_args(argv)

    payload = read_bundle(args.checkpoint)
    card = dict(payload["card"])
    shown = [_shown(args.checkpoint), _shown(args.out)] + (["--pose", _shown(args.pose)] if args.pose else [])
    shown += ["--two-frame", _shown(args.two_frame)] if args.two_frame else []
    shown += [f"--pose-trained-with '{c}'" for c in args.pose_trained_with or []]
    shown += [f"--trained-with '{c}'" for c in args.trained_with or []]
    shown += ["--colour", args.colour] if args.colour else []
    export = "python benchmarks/export_default_model.py " + " ".join(shown)
    before = card.get("default_model")  # an exported model exported again keeps how it was made
    card["default_model"] = {
        "trained_with": (" && ".join(args.trained_with) if args.trained_with
                         else before["trained_with"] if before else card.get("command", "")),
        "exported_with": f"{before['exported_with']} && {export}" if before else export,
        "source_checkpoint": before["source_checkpoint"] if before else _shown(args.checkpoint),
    }
    if args.colour:
        from colondepth.models.depth_net import DepthNetConfig
        from colondepth.train.checkpoint import input_words

        card["model"] = {**card["model"], "colour": args.colour}
        cfg = DepthNetConfig.from_dict(card["model"])
        card["normalisation"] = {**card["normalisation"], "input": input_words(cfg)}
    if args.trained_with:  # the run's own command line may name machine-specific folders
        card["command"] = args.trained_with[-1]
    pose = payload.get("pose")
    if args.pose:
        pose_payload = read_bundle(args.pose)
        if pose_payload.get("pose") is None:
            print(f"error: {args.pose}: has no pose network; pass the final.pt of a pose-only run", file=sys.stderr)
            return 2
        mine, theirs = payload["model_state"], pose_payload["model_state"]
        if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k]) for k in mine):
            print(f"error: {args.pose}: its depth weights differ from {args.checkpoint}'s, so its pose network was "
                  "not trained against this depth model; train it with init_from this checkpoint and "
                  "train_depth: false", file=sys.stderr)
            return 2
        pose = pose_payload["pose"]
        pcard = pose_payload["card"]
        pose_cmd = " && ".join(args.pose_trained_with) if args.pose_trained_with else pcard.get("command", "")
        card["pose_network"] = {"trained_with": pose_cmd, "curriculum": pcard.get("curriculum"),
                                "stage": pcard.get("stage"), "step": pcard.get("step"),
                                "source_checkpoint": _shown(args.pose)}
    two = payload.get("two_frame")
    if args.two_frame:
        tf_payload = read_bundle(args.two_frame)
        two = tf_payload.get("two_frame")
        if two is None:
            print(f"error: {args.two_frame}: has no two-frame network; pass the final.pt of a two_frame run",
                  file=sys.stderr)
            return 2
        tcard = tf_payload["card"]
        card["two_frame_network"] = {"trained_with": tcard.get("command", ""), "curriculum": tcard.get("curriculum"),
                                     "stage": tcard.get("stage"), "step": tcard.get("step"),
                                     "source_checkpoint": _shown(args.two_frame)}
    out = Path(args.out)
    save_bundle(out, build_depth(payload, args.checkpoint), card, payload.get("config"), pose=pose, two_frame=two)
    loaded = load_bundle(out)  # proves it loads with weights_only=True and matches its card
    mb = out.stat().st_size / 2**20
    print(f"wrote {out} ({mb:.2f} MB), step {card.get('step')}, curriculum {card.get('curriculum')}, "
          f"pose network: {'yes' if loaded.pose is not None else 'no'}, "
          f"two-frame network: {'yes' if loaded.two_frame is not None else 'no'}")
    if mb > MAX_MB:
        print(f"error: {out} is {mb:.1f} MB, over the {MAX_MB:.0f} MB budget for shipped files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
