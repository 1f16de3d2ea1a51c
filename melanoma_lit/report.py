"""python -m melanoma_lit.report MULTIRUN_DIR [--out DIR]: the sweep report on demand (sweeps write it at the end)."""

from __future__ import annotations

import argparse
import sys

from melanoma_lit.errors import MelanomaLitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m melanoma_lit.report",
        description="Summarise a multirun folder: cross-validation mean ± std, out-of-fold metrics, ensembles, "
        "ROC curves, confusion matrices, failed and missing jobs (report.md, report.html, report.json, PNGs).",
    )
    parser.add_argument("sweep_dir", metavar="MULTIRUN_DIR", help="folder a multirun wrote (holds multirun.yaml)")
    parser.add_argument("--out", default=None, help="where to write the report (default: MULTIRUN_DIR/report)")
    args = parser.parse_args(argv)

    from melanoma_lit.analysis.sweep_report import write_report  # imported after parsing so that --help answers at once

    try:
        files = write_report(args.sweep_dir, args.out)
    except MelanomaLitError as error:
        print(f"\nError: {error}\n", file=sys.stderr)
        return 2
    print(f"report: {files.markdown}\n        {files.html}\n        {len(files.images)} plots in {files.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
