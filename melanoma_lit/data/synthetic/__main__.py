"""The command line: ``python -m melanoma_lit.data.synthetic --out DIR --n 2000 --size 256 --layout isic2019``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from melanoma_lit.data.synthetic.generator import generate
from melanoma_lit.data.synthetic.layouts import LAYOUTS
from melanoma_lit.errors import ConfigError, DataError


def _size_arg(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            width, height = text.lower().split("x")
            return int(width), int(height)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}': give an int (256) or WIDTHxHEIGHT (1024x768)") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m melanoma_lit.data.synthetic", description="Write a synthetic dermoscopy dataset."
    )
    parser.add_argument("--out", required=True, help="output folder (cleared if it holds an earlier synthetic set)")
    parser.add_argument("--n", type=int, default=2000, help="number of images")
    parser.add_argument("--size", type=_size_arg, default=256, help="square side (256) or WIDTHxHEIGHT (1024x768)")
    parser.add_argument("--layout", choices=LAYOUTS, default="isic2019")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        path = generate(
            args.out, args.n, args.size, args.layout, args.seed, args.workers, progress=not args.no_progress
        )
    except (ConfigError, DataError) as error:
        parser.exit(2, f"error: {error}\n")
    print(path)


if __name__ == "__main__":
    main()
