"""Which residual blocks of the official EDSR-baseline-LIIF should a shallower student's encoder start from?
Backward elimination: starting from all 16 blocks, drop in turn the block whose removal costs least, the teacher's
own decoder scoring each subset by mean Y-PSNR (the `ardet sr-eval` protocol) on centre crops of the photos the SR
configs train on, at x2, x3 and x4, computed in bfloat16 (a ranking: 3x faster than float32 on this CPU).
Set5/Set14 are never used: the choice is part of training.

    OMP_NUM_THREADS=1 .venv/bin/python bench/sr_block_select.py --keep 4 --json docs/data/sr-models/block-select.json

Prints one row per elimination step, the blocks kept and their score, then the score of as many blocks evenly
spaced (the control). A student built with ``model.encoder_init``
and ``model.encoder_blocks`` (sr/train.py) takes the head, those blocks and the body conv.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

import sr
from ardet.config import load_config
from sr.evaluate import benchmark_pair, psnr
from sr.train import Config, load_images

SCALES = (2, 3, 4)


def pruned(teacher: sr.LIIF, blocks: list[int]) -> sr.LIIF:
    """The teacher with an encoder of only ``blocks`` (its head and body conv kept) and its own decoder."""
    encoder = {"name": "edsr-baseline", "args": {"n_resblocks": len(blocks), "n_feats": teacher.encoder.out_dim}}
    model = sr.LIIF(encoder, teacher.args["imnet_spec"]).to(next(teacher.parameters()).dtype)
    model.encoder.take_blocks(teacher.encoder, blocks)
    model.imnet.load_state_dict(teacher.imnet.state_dict())
    return model.eval()


def score(model: sr.LIIF, pairs: list[tuple[int, torch.Tensor, torch.Tensor]]) -> float:
    return sum(psnr(model.upscale(lr[None], hr.shape[-2:])[0], hr, s) for s, lr, hr in pairs) / len(pairs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/sr/liif-mini.yaml", help="whose data section names the photos")
    p.add_argument("--teacher", default="liif-edsr-baseline")
    p.add_argument("--keep", type=int, default=4, help="eliminate down to this many blocks")
    p.add_argument("--crop", type=int, default=96, help="side of each photo's centre crop (a multiple of 12)")
    p.add_argument("--json", help="write the elimination steps here")
    args = p.parse_args()
    photos = load_images(replace(load_config(Config, args.config).data, synthetic=0))
    crops = [img[:, (img.shape[1] - args.crop) // 2:][:, :args.crop, (img.shape[2] - args.crop) // 2:][:, :, :args.crop]
             for img in photos]
    pairs = [(s, *benchmark_pair(c, s)) for c in crops for s in SCALES]
    teacher = sr.load_model(args.teacher, dtype=torch.bfloat16)  # a ranking: bf16 is 3x faster here
    kept = list(range(len(teacher.encoder.body) - 1))
    steps = [{"blocks": kept, "y_psnr": score(teacher, pairs)}]
    print(f"{len(crops)} training photos, centre {args.crop} px, x{'/x'.join(map(str, SCALES))}; mean Y-PSNR with "
          f"the teacher's decoder\n\n| blocks | kept | mean Y-PSNR (dB) |\n| --- | --- | --- |")
    print(f"| {len(kept)} | all | {steps[0]['y_psnr']:.2f} |", flush=True)
    while len(kept) > args.keep:
        trials = {b: score(pruned(teacher, [k for k in kept if k != b]), pairs) for b in kept}
        drop = max(trials, key=trials.get)
        kept = [k for k in kept if k != drop]
        steps.append({"blocks": kept, "dropped": drop, "y_psnr": trials[drop]})
        print(f"| {len(kept)} | {kept} | {trials[drop]:.2f} |", flush=True)
    n = len(steps[0]["blocks"])  # the control: as many blocks, evenly spaced from the first to the last
    even = sorted({round(i * (n - 1) / (len(kept) - 1)) for i in range(len(kept))}) if len(kept) > 1 else [n - 1]
    control = {"blocks": even, "y_psnr": score(pruned(teacher, even), pairs)}
    print(f"\nevenly spaced {even}: {control['y_psnr']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "config": args.config,
                                               "teacher": args.teacher, "crop": args.crop, "scales": SCALES,
                                               "photos": len(crops), "steps": steps, "evenly_spaced": control},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
