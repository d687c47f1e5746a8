"""``ardet make-data``: write the synthetic marked-blob detection dataset (COCO JSON + PNG), see docs/data.md."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "make-data",
                    "generate the deterministic synthetic detection dataset (train/val/test, COCO JSON + PNG images)",
                    "ardet make-data --out data/synth --seed 0\n"
                    "ardet make-data --out /tmp/tiny --seed 1 --num-train 50 --num-val 10 --num-test 10\n"
                    "ardet make-data --out data/synth256 --image-size 192 256   # height width")
    p.add_argument("--out", required=True, help="output folder: OUT/{train,val,test}/images/*.png and annotations.json")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same pixels and JSON on every machine")
    p.add_argument("--num-train", type=int, default=2000, help="training images (0: skip the split; one already there is kept)")
    p.add_argument("--num-val", type=int, default=100, help="validation images (0: skip, as for --num-train)")
    p.add_argument("--num-test", type=int, default=100, help="test images (0: skip, as for --num-train)")
    p.add_argument("--image-size", type=int, nargs="+", default=[192], metavar="PX",
                   help="native image size: one value (square) or HEIGHT WIDTH; at least 128")
    p.set_defaults(func=run)


def run(args) -> int:
    from ardet.synthetic import format_summary, make_dataset, summarize

    if len(args.image_size) not in (1, 2):
        raise ValueError(f"--image-size takes one value or HEIGHT WIDTH, got {len(args.image_size)} values")
    size = (args.image_size[0], args.image_size[-1])  # one value: square
    if args.num_train == args.num_val == args.num_test == 0:
        raise ValueError("all of --num-train, --num-val and --num-test are 0: nothing to make")
    paths = make_dataset(args.out, args.seed, args.num_train, args.num_val, args.num_test, size, progress=True)
    print("objects per COCO area range (small < 32^2 <= medium < 96^2 <= large) and per class, by image kind:")
    for split, path in paths.items():
        print(format_summary(split, summarize(path)))
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0
