"""SR benchmarks recorded in docs/benchmarks.md: fast vs plain path (time, max difference), MACs per output pixel of
each model, peak memory of a large upscale with the small model, bfloat16 vs float32 error, train-sr step time by
layout and precision.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sr.py --json runs/bench_sr.json            # everything
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sr.py --only speed,macs,bf16,memory,chunk,train

The official model needs `ardet weights pull liif-edsr-baseline`; without it its rows use random weights (said so).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

import sr
from ardet.flops import count_flops


def official_or_random():
    try:
        return sr.load_model("liif-edsr-baseline"), "official"
    except FileNotFoundError:
        return sr.create_model("liif-edsr-baseline").eval(), "random init"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def bench_speed(repeat: int = 2) -> list[dict]:
    """Fast vs plain path of EDSR-baseline-LIIF on CPU at integer and non-integer scales; the best of
    ``repeat`` interleaved runs (the machine is shared: interleaving keeps load drift out of the ratio)."""
    model, weights = official_or_random()
    rows = []
    # x2.5; non-integer x2.92; non-integer anisotropic x2.15 / x2.22; x1.67 (the 480x640 -> 800x1067 ratio)
    for lr_size, size in [((240, 320), (600, 800)), ((240, 320), (701, 933)), ((240, 320), (517, 709)),
                          ((240, 320), (400, 533))]:
        x = torch.rand(1, 3, *lr_size, generator=torch.Generator().manual_seed(0))
        model.upscale(x[..., :32, :32], (64, 64))  # warm-up (allocator, kernels)
        seconds = {"plain": [], "fast": []}
        for _ in range(repeat):
            plain, t = timed(model.upscale_plain, x, size)
            seconds["plain"].append(t)
            fast, t = timed(model.upscale, x, size)
            seconds["fast"].append(t)
        t_plain, t_fast = min(seconds["plain"]), min(seconds["fast"])
        rows.append({"model": f"liif-edsr-baseline ({weights})", "input": lr_size, "output": size,
                     "plain_s": round(t_plain, 2), "fast_s": round(t_fast, 2), "speedup": round(t_plain / t_fast, 2),
                     "max_abs_diff": float((plain - fast).abs().max())})
    return rows


def bench_macs() -> list[dict]:
    """MACs per output pixel (FlopCounterMode, ardet.flops) of each registered model, both paths, x2 and x4."""
    rows = []
    for name in sr.list_models():
        model = sr.create_model(name).eval()
        for scale in (2, 4):
            x = torch.rand(1, 3, 24, 24)
            size = (24 * scale, 24 * scale)
            row = {"model": name, "scale": scale}
            for path, fn in (("plain", model.upscale_plain), ("fast", model.upscale)):
                _, count = count_flops(fn, x, size)
                row[f"{path}_macs_per_px"] = round(count.macs / (size[0] * size[1]))
            rows.append(row)
    return rows


MEMORY_CHILD = """
import sys, time, torch, sr
def kib(field):  # Linux /proc/self/status: VmRSS (now), VmHWM (peak since start or since the reset below)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))
h, w, s = (int(v) for v in sys.argv[1:4])
model = sr.load_model("liif-small")
x = torch.rand(1, 3, h, w)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
before = kib("VmRSS:")
start = time.perf_counter()
out = model.upscale(x, (h * s, w * s))
print(kib("VmHWM:"), before, time.perf_counter() - start)
"""


def bench_memory() -> list[dict]:
    """Peak resident memory (fresh process each, Linux) of x2 upscales with the small model at two image sizes:
    the whole process, and what the upscale added to it (of which the output tensor is a part)."""
    rows = []
    for h, w in [(1000, 1500), (2000, 3000)]:
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(h), str(w), "2"], capture_output=True,
                             text=True, check=True).stdout.split()
        peak, before, seconds = int(out[0]) / 2 ** 20, int(out[1]) / 2 ** 20, float(out[2])
        rows.append({"model": "liif-small", "input": (h, w), "output": (2 * h, 2 * w),
                     "peak_rss_gb": round(peak, 2), "added_by_upscale_gb": round(peak - before, 2),
                     "output_tensor_gb": round(4 * h * w * 3 * 4 / 2 ** 30, 2), "seconds": round(seconds, 1)})
    return rows


def bench_bf16() -> list[dict]:
    """bfloat16 vs float32 outputs of the same upscale (error in [0, 1] units and as PSNR), and times."""
    rows = []
    official, weights = official_or_random()
    for name, model in ((f"liif-edsr-baseline ({weights})", official), ("liif-small", sr.load_model("liif-small"))):
        x = torch.rand(1, 3, 120, 160, generator=torch.Generator().manual_seed(1))
        ref, t32 = timed(model.float().upscale, x, (300, 400))
        low, t16 = timed(model.to(torch.bfloat16).upscale, x, (300, 400))
        model.float()
        err = (low - ref).abs()
        rows.append({"model": name, "input": (120, 160), "output": (300, 400),
                     "max_abs_err": round(float(err.max()), 4),
                     "mean_abs_err": round(float(err.mean()), 5),
                     "psnr_vs_fp32_db": round(float(-10 * torch.log10((low - ref).pow(2).mean())), 2),
                     "fp32_s": round(t32, 2), "bf16_s": round(t16, 2)})
    return rows


def bench_chunk(repeat: int = 3) -> list[dict]:
    """The decoder's queries per call on the CPU: 2048 for every model against the width-scaled default
    (LIIF.default_chunk), 480x640 -> 800x1066, best of ``repeat`` interleaved runs; the outputs must be equal."""
    rows = []
    x = torch.rand(1, 3, 480, 640, generator=torch.Generator().manual_seed(0))
    for name in ("liif-nano", "liif-micro", "liif-mini", "liif-small"):
        model = sr.load_model(name)
        chunk = model.default_chunk(torch.device("cpu"))
        best, outputs = {2048: float("inf"), chunk: float("inf")}, {}
        for _ in range(repeat):
            for c in best:
                outputs[c], t = timed(model.upscale, x, (800, 1066), chunk=c)
                best[c] = min(best[c], t)
        rows.append({"model": name, "default_chunk": chunk, "chunk2048_s": round(best[2048], 3),
                     "default_s": round(best[chunk], 3), "speedup": round(best[2048] / best[chunk], 2),
                     "max_abs_diff": float((outputs[2048] - outputs[chunk]).abs().max())})
    return rows


def bench_train(steps: int = 4) -> list[dict]:
    """One train-sr step (query_folded, L1, backward, Adam; batch 32 of 48 px LR patches, 2304 queries each) of the
    distilled models on the CPU: float32 NCHW (train-sr before channels-last) against channels-last float32 and
    bf16 autocast (train.precision), the mean of ``steps`` steps after a warm-up step, interleaved per step."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    lr, coord = torch.rand(32, 3, 48, 48, generator=gen), torch.rand(32, 2304, 2, generator=gen) * 2 - 1
    cell, hr = torch.full((32, 2), 2 / 96), torch.rand(32, 2304, 3, generator=gen) * 2 - 1
    modes = {"fp32_nchw_s": (torch.contiguous_format, False), "fp32_channels_last_s": (torch.channels_last, False),
             "bf16_channels_last_s": (torch.channels_last, True)}
    rows = []
    for name in ("liif-nano", "liif-micro", "liif-mini"):
        runs = {}
        for key, (layout, bf16) in modes.items():
            model = sr.create_model(name).to(memory_format=layout).train()
            runs[key] = (model, torch.optim.Adam(model.parameters(), 1e-4), layout, bf16)
        seconds = {key: [] for key in modes}
        for _ in range(steps + 1):
            for key, (model, opt, layout, bf16) in runs.items():
                start = time.perf_counter()
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    pred = model.query_folded(lr.contiguous(memory_format=layout), coord, cell)
                loss = F.l1_loss(pred, hr)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seconds[key].append(time.perf_counter() - start)
        row = {"model": name, **{key: round(sum(s[1:]) / steps, 3) for key, s in seconds.items()}}
        rows.append({**row, "speedup_bf16": round(row["fp32_nchw_s"] / row["bf16_channels_last_s"], 2)})
    return rows


BENCHES = {"speed": bench_speed, "macs": bench_macs, "memory": bench_memory, "bf16": bench_bf16, "chunk": bench_chunk,
           "train": bench_train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    for name in args.only.split(","):
        results[name] = BENCHES[name]()
        for row in results[name]:
            print(name, json.dumps(row))
    if args.json:
        from ardet.files import atomic_write_json

        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
