"""Train a class-conditional model on a folder of images (classes from sub-folder names) and write PNGs.

    python examples/train_on_a_folder.py PATH [--minutes 10] [--image-size 32] [--out runs/folder]

PATH holds one sub-folder per class (PATH/cat/*.png, PATH/dog/*.jpg, ...) at any depth below it; the images are
resized to --image-size. The samples go to OUT-samples/ as one PNG per image (what FID tools read), with a grid
beside the folder.
"""

from __future__ import annotations

import argparse

from rediffuse.cli import main as rediffuse_cli
import rediffuse


def main(argv: list[str] | None = None) -> rediffuse.Run:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=1_000_000, help="stop after this many steps (default: the time)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--out", default="runs/folder")
    args = p.parse_args(argv)
    run = rediffuse.fit(f"folder:{args.path}", out=args.out, conditional=True, image_size=args.image_size,
                        minutes=args.minutes, steps=args.steps, lr_schedule="cosine", batch_size=32,
                        net_kwargs={"channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1})
    # the same samples through the command line: one PNG per image in OUT-samples/, the grid in OUT-samples.png
    rediffuse_cli(["sample", args.out, "-n", str(8 * run.num_classes), "--steps", "18",
                   "--out", f"{args.out}-samples", "--overwrite", "--no-progress"])
    return run


if __name__ == "__main__":
    main()
