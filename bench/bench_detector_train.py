"""How fast the tiny Conditional DETR learns in the learning test's exact setup (tests/test_detector_train.py):
val AP along training, the loss drop, and what random-init models of the same config score.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_detector_train.py [--steps 350] [--out /tmp/ardet-bench-det]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_detector_train import make_shapes, random_init_detector, small_run  # noqa: E402

from ardet.files import read_jsonl  # noqa: E402
from detector.train import evaluate, train_detector  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=350)
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="ardet-bench-det-"))
    train_json, train_images = make_shapes(root / "train", 256, seed=0)
    val_json, val_images = make_shapes(root / "val", 48, seed=1)
    data = [f"data.train_json={train_json}", f"data.train_images={train_images}",
            f"data.val_json={val_json}", f"data.val_images={val_images}"]
    torch.manual_seed(0)
    cfg = small_run(root / "run", data, args.steps, "train.resume=false", f"train.val_every={max(1, args.steps // 5)}")
    start = time.perf_counter()
    train_detector(cfg, progress=True)
    seconds = time.perf_counter() - start
    records = list(read_jsonl(root / "run" / "train_log.jsonl"))
    for r in (r for r in records if "val" in r):
        print(f"step {r['step']:5d}  val AP {r['val']['AP']:.4f}  AP50 {r['val']['AP50']:.4f}")
    losses = [r["loss"] for r in records if "loss" in r]
    n = min(50, len(losses))
    print(f"loss: mean of first {n} steps {sum(losses[:n]) / n:.3f}, of last {n} {sum(losses[-n:]) / n:.3f}")
    print(f"training wall time {seconds:.1f} s with {torch.get_num_threads()} thread(s), validations included")
    for seed in range(5):
        m = evaluate(random_init_detector(cfg, seed), val_json, val_images, 64, 96)
        print(f"random init seed {seed}: AP {m['AP']:.2e}  AP50 {m['AP50']:.2e}")


if __name__ == "__main__":
    main()
