"""A barrier you can follow by hand: the double well L(x, y) = (x² − 1)² + y².

Two minima at (±1, 0), a ridge of height 1 at x = 0. Along A = (−1, 0) → B = (1, 0) the
loss is f(s) = 16 s²(s − 1)², and the three barrier forms of
``modeconn.measures.barrier_forms`` give (docs/method.md, "Why barriers appear"):

    measured  f(½) − ½(f(0) + f(1))                  = 1
    exact     −½ ∫ min(s, 1 − s) f''(s) ds           = 1   (trapezoid: 1.0004 on 101 points)
    midpoint  −⅛ f''(½) = −⅛ · (−16)                  = 2
    endpoint  ¼(f'(0) − f'(1)) + (1/16)(f''(0) + f''(1)) = 0 + 64/16 = 4

Run from the repository root:

    .venv/bin/python examples/toy_barrier.py [--out docs/figures/toy_barrier.png]
"""

from __future__ import annotations

import argparse

from modeconn.figures import save
from modeconn.figures.landscape import toy_barrier
from modeconn.measures.barrier_forms import double_well


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/figures/toy_barrier.png")
    parser.add_argument("--points", type=int, default=101)
    args = parser.parse_args(argv)
    toy = double_well(args.points)
    for form in ("measured", "exact", "midpoint", "endpoint"):
        print(f"{form:>9}: B = {toy[form]:.4f}")
    print(f"quadrature error bound of the exact form: {toy['exact_error']:.2g}")
    print(f"figure: {save(toy_barrier(toy), args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
