"""Active sampling (breed) against random sampling on the narrow-peak model (examples/peak),
same budgets, same training, in the same run: held-out error against number of simulations.

For each budget and each method, melissa-launcher runs examples/peak/config_breed.json (the
method and parameter_sweep_size changed), then the trained surrogate is scored on a held-out
set: GRID x GRID parameter points evenly over [0, 1]^2 (not simulations of either study), every
time step and cell, against peak.simulate. Printed: each run's figures, then a table (RMSE
overall, mean and median over the seeds, and within 3 sigma of the peak, fraction of simulations
within 3 sigma of the peak), the ratio breed / random of the mean RMSE and in how many seeds
breed's RMSE is the lower, and the plot bench/breed.png; the last line is one JSON object with
every figure.

    .venv/bin/python bench/breed.py [--budgets 30 60 100] [--repeats 3] [--seed 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melissa.config.loader import strip_comments
from melissa.server.learning import load_surrogate

REPO = Path(__file__).resolve().parents[1]
PEAK_DIR = REPO / "examples" / "peak"
sys.path.insert(0, str(PEAK_DIR))
import peak  # after the path insert above

GRID = 41
NEAR = 3 * peak.SIGMA  # "near the peak": where it is more than 1% of its height
STEPS, CELLS = 4, 8


def config(method: str, budget: int, seed: int, workdir: Path, **dl: Any) -> dict[str, Any]:
    cfg = json.loads(strip_comments((PEAK_DIR / "config_breed.json").read_text()))
    cfg["output_dir"] = str(workdir / f"{method}_{budget}_{seed}")
    cfg["study_options"].update(parameter_sweep_size=budget, seed=seed)
    cfg["sampling"]["method"] = method
    cfg["client_config"]["executable_command"] = (
        f"{sys.executable} {PEAK_DIR / 'peak.py'} --steps {STEPS} --cells {CELLS}")
    cfg["dl_config"].update(dl)
    return cfg


def run_study(cfg: dict[str, Any], workdir: Path) -> Path:
    path = workdir / f"{Path(cfg['output_dir']).name}.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "melissa.launcher", "-c", str(path)],
                          check=False, capture_output=True, text=True, timeout=600, cwd=workdir,
                          env={**os.environ, "COLUMNS": "200"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    return Path(cfg["output_dir"])


def held_out() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs of the default process_sample, true fields, near-peak mask) on the grid."""
    axis = np.linspace(0.0, 1.0, GRID)
    points = np.array([(x, y) for x in axis for y in axis])
    t = np.arange(STEPS) / (STEPS - 1)
    inputs = np.array([[x, y, s] for x, y in points for s in t], dtype=np.float32)
    truth = np.stack([np.stack(list(peak.simulate(x, y, STEPS, CELLS))) for x, y in points])
    distance = np.hypot(points[:, 0] - peak.PEAK[0], points[:, 1] - peak.PEAK[1])
    return inputs, truth.reshape(len(points) * STEPS, CELLS), np.repeat(
        distance < NEAR, STEPS)


def score(out: Path) -> dict[str, float]:
    inputs, truth, near = held_out()
    model = load_surrogate(out / "checkpoints" / "last.pt")
    with torch.no_grad():
        predicted = model(torch.from_numpy(inputs)).numpy()
    error = (predicted - truth) ** 2
    with open(out / "parameters.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "completed"]
    xy = np.array([(float(r["x"]), float(r["y"])) for r in rows])
    close = np.hypot(xy[:, 0] - peak.PEAK[0], xy[:, 1] - peak.PEAK[1]) < NEAR
    return {"rmse": float(np.sqrt(error.mean())), "rmse_near_peak": float(np.sqrt(error[near].mean())),
            "near_peak_fraction": float(close.mean()), "simulations": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[30, 60, 100])
    parser.add_argument("--repeats", type=int, default=3, help="seeds per budget and method")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    area = np.pi * NEAR**2  # of the near-peak disc: a uniform draw's chance
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="melissa-breed-") as tmp:
        for budget in args.budgets:
            for seed in range(args.seed, args.seed + args.repeats):
                for method in ("random", "breed"):
                    out = run_study(config(method, budget, seed, Path(tmp)), Path(tmp))
                    results.append({"method": method, "budget": budget, "seed": seed,
                                    **score(out)})
                    print(json.dumps(results[-1]), flush=True)
                    if method == "breed" and budget == max(args.budgets) and seed == args.seed:
                        (REPO / "bench" / "breed_placement.png").write_bytes(
                            (out / "breed.png").read_bytes())
    print(f"uniform draws within 3 sigma of the peak: {area:.3f} of the simulations")
    print(f"{'budget':>6} {'method':>7} {'RMSE':>8} {'median':>8} {'RMSE near peak':>15} "
          f"{'near peak':>10}")
    table: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        table.setdefault((r["budget"], r["method"]), []).append(r)
    summary = []
    for budget in args.budgets:
        means = {}
        for method in ("random", "breed"):
            rows = table[(budget, method)]
            means[method] = {k: float(np.mean([r[k] for r in rows]))
                             for k in ("rmse", "rmse_near_peak", "near_peak_fraction")}
            means[method]["rmse_median"] = float(np.median([r["rmse"] for r in rows]))
            m = means[method]
            print(f"{budget:>6} {method:>7} {m['rmse']:>8.4f} {m['rmse_median']:>8.4f} "
                  f"{m['rmse_near_peak']:>15.4f} {m['near_peak_fraction']:>10.2f}")
        ratio = means["breed"]["rmse"] / means["random"]["rmse"]
        wins = sum(b["rmse"] < r["rmse"] for b, r in zip(table[(budget, "breed")],
                                                         table[(budget, "random")], strict=True))
        print(f"{budget:>6} breed/random RMSE ratio {ratio:.2f}; breed lower in {wins} of "
              f"{len(table[(budget, 'breed')])} seeds")
        summary.append({"budget": budget, **{f"{m}_{k}": v for m in means
                                            for k, v in means[m].items()}, "ratio": ratio,
                        "breed_wins": wins})
    plot(summary, REPO / "bench" / "breed.png")
    print(json.dumps({"results": results, "summary": summary}))


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [s["budget"] for s in summary]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, style in (("random", "o--"), ("breed", "s-")):
        ax.plot(budgets, [s[f"{method}_rmse"] for s in summary], style, label=f"{method}: all")
        ax.plot(budgets, [s[f"{method}_rmse_near_peak"] for s in summary], style, alpha=0.5,
                label=f"{method}: near the peak")
    ax.set_xlabel("simulations")
    ax.set_ylabel("held-out RMSE")
    ax.set_yscale("log")
    ax.set_title("narrow-peak model: active (breed) against random sampling")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
