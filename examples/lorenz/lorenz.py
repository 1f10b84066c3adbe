"""The Lorenz system as a Melissa client: parameters (sigma, rho, beta) -> trajectory.

    dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z,

from (x, y, z) = (1, 1, 1) at t = 0, integrated with classical Runge-Kutta (RK4) at a fixed
step. Each of the nb_steps output times t_k = (k + 1) * t_end / nb_steps sends the state
[x, y, z] as the field "state" (3 values).

Usage (the launcher appends the parameter values in the order of config.json's `parameters`):

    python3 lorenz.py SIGMA RHO BETA [--steps N] [--t-end T]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import numpy as np

FIELD = "state"
SUBSTEPS = 20  # RK4 steps per output interval
INITIAL_STATE = (1.0, 1.0, 1.0)


def _rhs(s: np.ndarray, sigma: float, rho: float, beta: float) -> np.ndarray:
    x, y, z = s
    return np.array([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])


def simulate(
    sigma: float, rho: float, beta: float, *, nb_steps: int = 100, t_end: float = 2.0
) -> Iterator[np.ndarray]:
    """Yield the state [x, y, z] at each output time (pure and deterministic)."""
    if nb_steps < 1 or not t_end > 0:
        raise ValueError(f"need nb_steps >= 1 and t_end > 0, got {nb_steps}, {t_end}")
    dt = t_end / nb_steps / SUBSTEPS
    s = np.array(INITIAL_STATE)
    for _ in range(nb_steps):
        for _ in range(SUBSTEPS):
            k1 = _rhs(s, sigma, rho, beta)
            k2 = _rhs(s + 0.5 * dt * k1, sigma, rho, beta)
            k3 = _rhs(s + 0.5 * dt * k2, sigma, rho, beta)
            k4 = _rhs(s + dt * k3, sigma, rho, beta)
            s = s + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        yield s.copy()


def parse_args(argv: Sequence[str]) -> tuple[list[float], int, float]:
    values: list[float] = []
    steps, t_end = 100, 2.0
    args = list(argv)
    i = 0
    while i < len(args):  # by hand: argparse takes values such as -1e-05 for options
        if args[i] == "--steps":
            steps = int(args[i + 1])
            i += 1
        elif args[i] == "--t-end":
            t_end = float(args[i + 1])
            i += 1
        else:
            values.append(float(args[i]))
        i += 1
    if len(values) != 3:
        raise ValueError(f"expected SIGMA RHO BETA, got {' '.join(args)}")
    return values, steps, t_end


def main(argv: Sequence[str] | None = None) -> int:
    try:
        (sigma, rho, beta), steps, t_end = parse_args(sys.argv[1:] if argv is None else argv)
    except (ValueError, IndexError) as exc:
        print(f"lorenz.py: error: {exc}\nusage: lorenz.py SIGMA RHO BETA [--steps N] "
              "[--t-end T]", file=sys.stderr)
        return 2
    import melissa.client as melissa  # here: simulate() stays importable without the client

    try:
        melissa.init(FIELD, 3)
        for state in simulate(sigma, rho, beta, nb_steps=steps, t_end=t_end):
            melissa.send(FIELD, state)
        melissa.finalize()
    except melissa.ClientError as exc:
        print(f"lorenz.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
