"""Detector forward on the CPU: the batch in the default NCHW layout against channels-last (what
detector.normalize_and_pad builds on the CPU), side by side, best of N interleaved runs, and the largest output
difference. Models: DETR-R50's architecture and the tiny DETR (random init: configs/detector/detr-r50.yaml,
configs/eval/detr-tiny.yaml) and the shipped demo detector.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_detector.py [--repeat 5]
"""
import argparse
import time

import torch

from detector import load_detector

CASES = [("configs/detector/detr-r50.yaml", (800, 1066)), ("configs/eval/detr-tiny.yaml", (800, 1066)),
         ("configs/eval/detr-tiny.yaml", (480, 640)),
         ("models/detector-demo", (256, 341)), ("models/detector-demo", (192, 192))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'detector':30s} {'input':>9s} {'NCHW ms':>8s} {'NHWC ms':>8s} {'speed-up':>8s} {'max |diff| logits':>18s}")
    for spec, size in CASES:
        torch.manual_seed(0)  # the tiny DETR is random-init: the same weights every run
        detector = load_detector(spec)
        image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
        pixel_values, pixel_mask = detector.preprocess([image])
        layouts = {"nchw": pixel_values.contiguous(),
                   "nhwc": pixel_values.contiguous(memory_format=torch.channels_last)}
        best, logits = {k: float("inf") for k in layouts}, {}
        with torch.inference_mode():
            detector.model(pixel_values=layouts["nchw"], pixel_mask=pixel_mask)  # warm-up
            for _ in range(args.repeat):  # interleaved: load drift on a shared machine hits both alike
                for name, x in layouts.items():
                    start = time.perf_counter()
                    logits[name] = detector.model(pixel_values=x, pixel_mask=pixel_mask).logits
                    best[name] = min(best[name], time.perf_counter() - start)
        diff = float((logits["nchw"] - logits["nhwc"]).abs().max())
        print(f"{spec:30s} {size[0]:>4d}x{size[1]:<4d} {1e3 * best['nchw']:8.1f} {1e3 * best['nhwc']:8.1f} "
              f"{best['nchw'] / best['nhwc']:7.2f}x {diff:18.1e}")


if __name__ == "__main__":
    main()
