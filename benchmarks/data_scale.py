"""Data at any size, in one command: image folders and tables, each figure beside its baseline with the ratio and
PASS/FAIL (the parts are data_scale_images.py and data_scale_tables.py, each runnable alone). The image part ends
with the GPU line (resnet18 streamed against the hand loop on the GPU, and the GPU kept busy) where CUDA is there.

Run: python benchmarks/data_scale.py [--images 1000 4000 16000] [--rows 20000000] [--only images|tables]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from data_scale_images import gpu_lines, image_lines  # noqa: E402
from data_scale_tables import table_scale_lines  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 4000, 16000], help="images per folder")
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the large Parquet folder")
    parser.add_argument("--only", choices=("images", "tables"), help="one part alone")
    args = parser.parse_args()
    print(f"{'':38}{'dltrain':>12}{'baseline':>14}{'ratio':>8}  {'unit':10}{'target':>10}")
    if args.only != "tables":
        lines = image_lines(args.images, echo=lambda text: print(text, flush=True))
        if len(set(args.images)) > 1:  # the flatness line, measured once every size was
            print(lines[-1])
        print("\n".join(gpu_lines()), flush=True)
    if args.only != "images":
        print("tables: generated Parquet, 20 columns, model=mlp")
        for line in table_scale_lines(args.rows):
            print(line, flush=True)


if __name__ == "__main__":
    main()
