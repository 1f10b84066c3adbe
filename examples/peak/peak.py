"""A model whose difficulty sits in a small part of its parameter space: a narrow peak.

Two parameters (x, y) in [0, 1]^2; the output, at each of nb_steps time steps, is a field of
`cells` values: a smooth function of (x, y), time and position, plus a bump of height HEIGHT and
width SIGMA centred at PEAK that only simulations near it see. A surrogate trained on uniformly
drawn simulations rarely sees the bump; active sampling (sampling.method "breed") places more
simulations there (config_breed.json).

Usage (the launcher appends the parameter values):

    python3 peak.py [--steps N] [--cells N] X Y
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import numpy as np

PEAK = (0.7, 0.3)
SIGMA = 0.05
HEIGHT = 2.0
FIELD = "u"


def simulate(x: float, y: float, nb_steps: int = 4, cells: int = 8) -> Iterator[np.ndarray]:
    """The field at each time step, float64 arrays of `cells` values."""
    position = np.linspace(0.0, 1.0, cells)
    bump = np.exp(-((x - PEAK[0]) ** 2 + (y - PEAK[1]) ** 2) / (2 * SIGMA**2))
    for step in range(nb_steps):
        t = (step + 1) / nb_steps
        smooth = 0.3 * x + 0.2 * y * position + 0.1 * t
        yield smooth + HEIGHT * bump * (1.0 - 0.5 * t) * np.cos(np.pi * position)


def main(argv: Sequence[str]) -> int:
    try:
        options = {"--steps": 4, "--cells": 8}
        args = list(argv)
        while args and args[0] in options:
            name = args.pop(0)
            options[name] = int(args.pop(0))
        x, y = (float(a) for a in args)
    except (IndexError, ValueError) as exc:
        print(f"peak.py: error: {exc}\n{__doc__}", file=sys.stderr)
        return 2
    import melissa.client as melissa

    try:
        melissa.init(FIELD, options["--cells"])
        for field in simulate(x, y, options["--steps"], options["--cells"]):
            melissa.send(FIELD, field)
        melissa.finalize()
    except melissa.ClientError as exc:
        print(f"peak.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
