"""The 2-D heat equation on the unit square, as a Melissa client.

    dT/dt = alpha * (d2T/dx2 + d2T/dy2)   on [0, 1] x [0, 1],   Dirichlet walls,

solved with explicit finite differences (5-point stencil) on a node-centred grid of ny x nx
points: the outer rows and columns of the array *are* the walls and keep their temperatures;
the interior starts at the initial temperature. Everything is non-dimensional: lengths in units
of the domain side, time such that the run ends at t = T_END = 0.1. With the diffusivity in
[0.5, 2.0], heat then diffuses a length sqrt(alpha * T_END) ~ 0.22 .. 0.45 into the domain,
so the walls visibly reach the centre by the last step.

Array layout: field[j, i] is the point x = i / (nx - 1), y = j / (ny - 1); row 0 is the bottom
wall (y = 0), row ny - 1 the top wall, column 0 the left wall (x = 0), column nx - 1 the right
wall. The four corners, which the stencil never reads, hold the mean of their two walls.

Output: nb_steps equally spaced output times; output step k (k = 0 .. nb_steps - 1) is the state
at t = (k + 1) * T_END / nb_steps. The initial state is not sent: it is the same constant field
for every simulation but the walls, so it carries no information for the statistics.

Usage (the launcher appends the parameter values, in the order of config.json's `parameters`):

    python3 heat.py INITIAL LEFT RIGHT TOP BOTTOM DIFFUSIVITY [--nx N] [--ny N] [--steps N]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence

import numpy as np

T_END = 0.1
"""Physical end time of every simulation (non-dimensional)."""

SAFETY = 0.8
"""Fraction of the explicit stability limit used for the time step (margin for rounding)."""

PARAMETER_NAMES = ("initial", "left", "right", "top", "bottom", "diffusivity")
FIELD = "temperature"


def initial_field(
    initial: float, left: float, right: float, top: float, bottom: float, *, nx: int, ny: int
) -> np.ndarray:
    """The state at t = 0: interior at `initial`, walls at their temperatures."""
    field = np.full((ny, nx), float(initial))
    field[0, :] = bottom
    field[-1, :] = top
    field[:, 0] = left
    field[:, -1] = right
    # corners belong to two walls; the mean keeps the field symmetric when the walls are
    field[0, 0] = 0.5 * (bottom + left)
    field[0, -1] = 0.5 * (bottom + right)
    field[-1, 0] = 0.5 * (top + left)
    field[-1, -1] = 0.5 * (top + right)
    return field


def sub_iterations(diffusivity: float, *, nx: int, ny: int, nb_steps: int) -> int:
    """Explicit iterations per output interval so that the scheme is stable for `diffusivity`.

    The forward-Euler 5-point scheme is stable (and obeys the discrete maximum principle) when
    alpha * dt * (2/dx^2 + 2/dy^2) <= 1, i.e. dt <= dx^2 / (4 alpha) on a square grid. The time
    step is derived from the simulation's own diffusivity, with a SAFETY margin, so that every
    simulation outputs at the same physical times whatever its parameters.
    """
    dx, dy = 1.0 / (nx - 1), 1.0 / (ny - 1)
    dt_max = SAFETY / (diffusivity * (2.0 / dx**2 + 2.0 / dy**2))
    return max(1, math.ceil((T_END / nb_steps) / dt_max))


def simulate(
    initial: float,
    left: float,
    right: float,
    top: float,
    bottom: float,
    diffusivity: float,
    *,
    nx: int = 100,
    ny: int = 100,
    nb_steps: int = 100,
) -> Iterator[np.ndarray]:
    """Yield the temperature at each of the nb_steps output times, as new (ny, nx) float64 arrays.

    Pure and deterministic: tests recompute a study's ensemble offline from its parameters.
    """
    if nx < 3 or ny < 3:
        raise ValueError(f"the grid needs at least 3 x 3 points, got nx={nx}, ny={ny}")
    if nb_steps < 1:
        raise ValueError(f"nb_steps must be >= 1, got {nb_steps}")
    values = (initial, left, right, top, bottom, diffusivity)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"parameters must be finite numbers, got {values}")
    if diffusivity <= 0:
        raise ValueError(f"diffusivity must be > 0, got {diffusivity}")

    n_sub = sub_iterations(diffusivity, nx=nx, ny=ny, nb_steps=nb_steps)
    dt = (T_END / nb_steps) / n_sub
    rx = diffusivity * dt * (nx - 1) ** 2  # alpha dt / dx^2
    ry = diffusivity * dt * (ny - 1) ** 2  # alpha dt / dy^2

    current = initial_field(initial, left, right, top, bottom, nx=nx, ny=ny)
    # two buffers swapped each iteration: no allocation of a full field per iteration, and
    # the walls, written once in both, never change
    following = current.copy()
    for _ in range(nb_steps):
        for _ in range(n_sub):
            _explicit_step(current, following, rx, ry)
            current, following = following, current
        yield current.copy()


def _explicit_step(field: np.ndarray, out: np.ndarray, rx: float, ry: float) -> None:
    """One forward-Euler step of the interior of `field` into `out` (walls untouched)."""
    centre = field[1:-1, 1:-1]
    # (west + east) and (south + north) are summed first: addition is commutative, so mirrored
    # parameters give a bitwise mirrored field
    d2x = field[1:-1, :-2] + field[1:-1, 2:] - 2.0 * centre
    d2y = field[:-2, 1:-1] + field[2:, 1:-1] - 2.0 * centre
    out[1:-1, 1:-1] = centre + rx * d2x + ry * d2y


USAGE = (
    "usage: heat.py INITIAL LEFT RIGHT TOP BOTTOM DIFFUSIVITY [--nx N] [--ny N] [--steps N]\n"
    "  INITIAL, LEFT, RIGHT, TOP, BOTTOM: temperatures (interior at t=0, then the four walls)\n"
    "  DIFFUSIVITY: thermal diffusivity (> 0)\n"
    "  --nx, --ny: grid points along x and y (default 100, at least 3)\n"
    "  --steps: output time steps (default 100; must match study_options.nb_time_steps)"
)


class UsageError(Exception):
    """Bad command line; the message says what is wrong."""


def parse_args(argv: Sequence[str]) -> tuple[list[float], dict[str, int]]:
    """Split argv into the 6 parameter values and the grid options.

    Hand-written rather than argparse: parameter values such as -1e-05 look like options to
    argparse, and the launcher may format any float that way.
    """
    options = {"nx": 100, "ny": 100, "steps": 100}
    values: list[float] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, _, inline = arg[2:].partition("=")
            if name not in options:
                raise UsageError(f"unknown option {arg!r}")
            if not inline:
                i += 1
                if i >= len(args):
                    raise UsageError(f"option --{name} needs a value")
                inline = args[i]
            options[name] = _positive_int(name, inline)
        else:
            values.append(_float(arg))
        i += 1
    if len(values) != len(PARAMETER_NAMES):
        raise UsageError(
            f"expected {len(PARAMETER_NAMES)} parameter values ({', '.join(PARAMETER_NAMES)}), "
            f"got {len(values)}: {' '.join(args)}"
        )
    if values[-1] <= 0:
        raise UsageError(f"diffusivity must be > 0, got {values[-1]}")
    if options["nx"] < 3 or options["ny"] < 3:
        raise UsageError(f"--nx and --ny must be at least 3, got {options['nx']}, {options['ny']}")
    return values, options


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"not a finite number: {text!r}")
    return value


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--{name} expects an integer, got {text!r}") from None
    if value < 1:
        raise UsageError(f"--{name} must be positive, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        values, options = parse_args(argv)
    except UsageError as exc:
        print(f"heat.py: error: {exc}\n{USAGE}", file=sys.stderr)
        return 2

    # Imported here, not at the top, so that simulate() can be imported (tests, offline
    # reference ensembles) without the client and its network stack.
    import melissa.client as melissa

    nx, ny = options["nx"], options["ny"]
    try:
        melissa.init(FIELD, nx * ny, shape=(ny, nx))
        for field in simulate(*values, nx=nx, ny=ny, nb_steps=options["steps"]):
            melissa.send(FIELD, field)
        melissa.finalize()
    except melissa.ClientError as exc:
        # the client's messages say what to fix; a traceback would only hide them
        print(f"heat.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
