"""The Ishigami function as a Melissa client: the classic test of Sobol' indices.

    f(x1, x2, x3) = sin x1 + 7 sin² x2 + 0.1 x3⁴ sin x1,   xi ~ U(-pi, pi)

Analytic indices: S1 = 0.3139, S2 = 0.4424, S3 = 0; ST1 = 0.5576, ST2 = 0.4424, ST3 = 0.2437.
One field "y" of one cell and one time step. Usage (the launcher appends the values):

    python3 ishigami.py X1 X2 X3
"""

from __future__ import annotations

import math
import sys

import numpy as np

import melissa.client as melissa


def ishigami(x1: float, x2: float, x3: float) -> float:
    return math.sin(x1) + 7.0 * math.sin(x2) ** 2 + 0.1 * x3**4 * math.sin(x1)


def main(argv: list[str]) -> int:
    try:
        x1, x2, x3 = (float(a) for a in argv)
    except ValueError:
        print("usage: ishigami.py X1 X2 X3 (three numbers)", file=sys.stderr)
        return 2
    melissa.init("y", 1)
    melissa.send("y", np.array([ishigami(x1, x2, x3)]))
    melissa.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
