"""Simulations that are SIGKILLed mid-stream, hang, or fail several times are resubmitted, and the
study's statistics equal those of the same study without faults; one that always fails is
redrawn under a new id, its parameters continuing the seeded sequence. parameters.csv and the
summary list every failure and what was done."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melissa.config.models import Sampling, UniformParameter
from melissa.sampling import Sampler
from tests.chaos.conftest import (
    CELLS,
    STEPS,
    assert_same_statistics,
    assert_statistics_of,
    chaos_config,
    run_launcher,
    statistics,
)

SIMS = 12


def fault_plan(seed: int) -> dict[str, Any]:
    """A seeded random choice of faulty simulations: 2 killed, 1 hung, 2 failing twice."""
    ids = [str(i) for i in random.Random(seed).sample(range(SIMS), 5)]
    return {"kill": {ids[0]: 0, ids[1]: 0}, "hang": {ids[2]: 0},
            "fail": {ids[3]: 2, ids[4]: 1}}


def test_faults_leave_the_statistics_unchanged(tmp_path: Path) -> None:
    plan = fault_plan(seed=2024)
    (tmp_path / "faulty").mkdir()
    (tmp_path / "clean").mkdir()
    faulty = run_launcher(chaos_config(tmp_path / "faulty", SIMS, plan), tmp_path / "faulty")
    assert faulty.returncode == 0, faulty.output
    clean = run_launcher(chaos_config(tmp_path / "clean", SIMS), tmp_path / "clean")
    assert clean.returncode == 0, clean.output
    assert_same_statistics(statistics(faulty), statistics(clean))

    rows = {r["simulation_id"]: r for r in faulty.parameters()}
    assert len(rows) == SIMS and {r["status"] for r in rows.values()} == {"completed"}
    expected_attempts = {**{s: 2 for s in plan["kill"]}, **{s: 2 for s in plan["hang"]},
                         **{s: k + 1 for s, k in plan["fail"].items()}}
    for sim, row in rows.items():
        assert row["attempts"] == str(expected_attempts.get(sim, 1)), row
    for sim in plan["kill"]:
        assert "attempt 0: killed by signal SIGKILL, resubmitted" in rows[sim]["message"]
    for sim in plan["hang"]:
        assert "attempt 0: sent nothing for" in rows[sim]["message"]
        assert "simulation_timeout), cancelled, resubmitted" in rows[sim]["message"]
    for sim, k in plan["fail"].items():
        assert rows[sim]["message"].count("exited with status 1, resubmitted") == k
    # The summary lists each of them, and the launcher's log each resubmission.
    assert "Failed simulations and what was done" in faulty.output
    assert re.search(r"failed runs +│ 6 ", faulty.output), faulty.output
    log = (faulty.output_dir / "logs" / "launcher.log").read_text()
    assert log.count("resubmitted") == 6


def test_a_simulation_that_always_fails_is_redrawn(launcher: Any, tmp_path: Path) -> None:
    sims, doomed = 6, 2
    run = launcher(chaos_config(tmp_path, sims, {"doomed": [str(doomed)]}))
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert [r["simulation_id"] for r in rows] == [str(i) for i in range(sims + 1)]
    old, new = rows[doomed], rows[sims]
    assert (old["status"], old["attempts"], old["exit_code"]) == ("redrawn", "3", "1")
    assert old["message"].endswith(f"failed 3 times, redrawn as simulation {sims}")
    assert new["status"] == "completed" and new["attempts"] == "1"
    # The redrawn parameters continue the study's seeded sequence.
    sampler = Sampler([UniformParameter(name="p", distribution="uniform", low=0, high=1)],
                      Sampling(), seed=7, planned_size=sims)
    draws = sampler.draw(sims + 1)[:, 0]
    assert [float(r["p"]) for r in rows] == draws.tolist()
    # The statistics are those of the simulations that completed (NumPy, offline).
    completed = np.array([float(r["p"]) for r in rows if r["status"] == "completed"])
    assert len(completed) == sims
    assert_statistics_of(statistics(run), completed)
    assert (f"simulation {doomed}: redrawn (3 runs): attempts 0-2: exited with status 1; failed "
            f"3 times, redrawn as simulation {sims}") in run.output
    assert re.search(r"redrawn +│ 1 ", run.output), run.output


def test_a_simulation_crashing_mid_stream_leaves_no_trace(launcher: Any, tmp_path: Path) -> None:
    """Steps 0 and 1 of the crashing simulation arrive on each attempt; none stays in."""
    sims, doomed = 5, 1
    cfg = chaos_config(tmp_path, sims, {"crash": {str(doomed): 2}})
    cfg["sa_config"].update({"min": True, "max": True, "quantiles": [0.1, 0.5]})
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert [r["status"] for r in rows].count("redrawn") == 1 and rows[doomed]["attempts"] == "3"
    completed = np.array([float(r["p"]) for r in rows if r["status"] == "completed"])
    assert len(completed) == sims
    got = statistics(run)
    assert_statistics_of(got, completed)
    # Quantiles cannot be un-added: held apart, they are np.quantile's over the completed ones
    # (exact up to sa_config.quantile_exact_samples; "auto", the default: the study's size).
    fields = completed[:, None, None] * np.arange(1, CELLS + 1) + np.arange(STEPS)[:, None]
    np.testing.assert_allclose(got["quantile"].values, np.quantile(fields, [0.1, 0.5], axis=0),
                               rtol=1e-12)
    assert got.attrs["simulations_dropped"] == 1
    assert "abandoned_samples" not in got and got.attrs["simulations_abandoned_included"] == 0
    assert re.search(r"redrawn +│ 1 ", run.output), run.output
    assert ("The statistics hold completed simulations only: the data of 1 redrawn or failed "
            "ones is left out of the results.") in run.output


def test_a_sobol_member_crashing_mid_stream_leaves_no_trace(launcher: Any, tmp_path: Path) -> None:
    """Group 1's B member crashes at step 2 on every attempt: the group is redrawn, and neither
    the indices nor the other statistics keep its steps 0 and 1."""
    groups, size = 3, 3  # one parameter: A, B, C_p
    cfg = chaos_config(tmp_path, groups, {"crash": {"4": 2}})
    cfg["sa_config"]["sobol_indices"] = True
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert [r["status"] for r in rows].count("redrawn") >= 1
    complete_groups = [g for g in range(len(rows) // size)
                       if all(r["status"] == "completed" for r in rows[g * size:(g + 1) * size])]
    assert len(complete_groups) == groups
    got = statistics(run)
    np.testing.assert_array_equal(got["sobol_groups"].values, groups)
    # A and B members complete, even of the redrawn group (A may finish before the redraw).
    counted = np.array([float(r["p"]) for r in rows
                        if r["status"] == "completed" and r["sobol_member"] in ("A", "B")])
    assert_statistics_of(got, counted)


@pytest.mark.parametrize("second_order", [False, True])
def test_a_failing_sobol_member_redraws_its_whole_group(launcher: Any, tmp_path: Path,
                                                        second_order: bool) -> None:
    # One parameter: groups of A, B, C_p (and D_p with second order); `doomed` is group 1's B.
    groups, size = 3, 4 if second_order else 3
    doomed, hung = size + 1, size + 2
    # Its C_p hangs long enough to be running still when the group is redrawn.
    cfg = chaos_config(tmp_path, groups, {"doomed": [str(doomed)], "hang": {str(hung): 0}})
    cfg["sa_config"]["sobol_indices"] = True
    cfg["sa_config"]["second_order"] = second_order
    cfg["study_options"]["simulation_timeout"] = 20
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert [r["simulation_id"] for r in rows] == [str(i) for i in range((groups + 1) * size)]
    redrawn = f"group 3 (simulations {3 * size}-{4 * size - 1})"
    assert rows[doomed]["status"] == "redrawn"
    assert rows[doomed]["message"].endswith(f"failed 3 times, redrawn as {redrawn}")
    assert rows[size]["status"] == "completed"  # done before the redraw: kept
    assert (rows[hung]["status"], rows[hung]["message"]) == (
        "redrawn", f"group 1 redrawn as {redrawn}: simulation {doomed} failed 3 times")
    assert [r["status"] for r in rows[3 * size:]] == ["completed"] * size
    assert [r["sobol_member"] for r in rows[3 * size:]] == ["A", "B", "C_p", "D_p"][:size]
    sampler = Sampler([UniformParameter(name="p", distribution="uniform", low=0, high=1)],
                      Sampling(), seed=7, planned_size=groups, pick_freeze=True,
                      second_order=second_order)
    assert [float(r["p"]) for r in rows] == sampler.draw(groups + 1)[:, 0].tolist()
    server_log = (run.output_dir / "logs" / "server.log").read_text()
    assert f"abandoned simulations [{doomed}, {hung}" in server_log, server_log


def test_a_tiny_hold_budget_flags_the_abandoned_data_it_committed(launcher: Any,
                                                                   tmp_path: Path) -> None:
    """sa_config.hold_memory_mb 0 commits every chunk on arrival: the crashing simulation's
    steps 0 and 1 stay in, and the results say so (with the default budget, the test above:
    nothing stays)."""
    sims, doomed = 5, 1
    cfg = chaos_config(tmp_path, sims, {"crash": {str(doomed): 2}})
    cfg["sa_config"]["hold_memory_mb"] = 0
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert rows[doomed]["status"] == "redrawn"
    completed = np.array([float(r["p"]) for r in rows if r["status"] == "completed"])
    got = statistics(run)
    flagged = np.repeat(np.array([1, 1, 0, 0])[:, None], CELLS, axis=1)
    np.testing.assert_array_equal(got["abandoned_samples"].values, flagged)
    np.testing.assert_array_equal(got["count"].values, len(completed) + flagged)
    with_doomed = np.append(completed, float(rows[doomed]["p"]))
    fields = with_doomed[:, None, None] * np.arange(1, CELLS + 1) + np.arange(STEPS)[:, None]
    np.testing.assert_allclose(got["mean"].values[:2], fields[:, :2].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["mean"].values[2:], fields[:-1, 2:].mean(axis=0), rtol=1e-12)
    assert (got.attrs["simulations_seen"], got.attrs["simulations_abandoned_included"]) == (5, 1)
    listed = (run.output_dir / "statistics" / "abandoned_data.csv").read_text().splitlines()
    assert listed == ["simulation,field,server_rank,time_steps", f"{doomed},f,0,0-1"]
    assert "The results hold data of 1 simulations that did not complete (ids 1)" in run.output


def test_a_tiny_hold_budget_flags_a_redrawn_sobol_group(launcher: Any, tmp_path: Path) -> None:
    """hold_memory_mb 0 in a Sobol' study: group 1's B member crashes at step 2 on every attempt;
    its steps 0 and 1 stay in the statistics, the group's in the indices, all flagged."""
    groups, doomed = 3, 4
    cfg = chaos_config(tmp_path, groups, {"crash": {str(doomed): 2}})
    cfg["sa_config"].update({"sobol_indices": True, "hold_memory_mb": 0})
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert rows[doomed]["status"] == "redrawn"
    got = statistics(run)
    np.testing.assert_array_equal(got["sobol_groups"].values[:, 0], [groups + 1] * 2 + [groups] * 2)
    flagged = got["abandoned_samples"].values
    assert (flagged[:2] >= 1).all() and (flagged[2:] == 0).all()  # B, and C_p if it was running
    counted = [float(r["p"]) for r in rows if r["status"] == "completed"
               and r["sobol_member"] in ("A", "B")]
    extra = got["count"].values[:, 0] - len(counted)  # A or B members that did not complete
    assert (extra[:2] >= 1).all() and (extra[2:] == 0).all() and (extra <= flagged[:, 0]).all()
    assert got.attrs["simulations_seen"] == len(counted)
    assert 1 <= got.attrs["simulations_abandoned_included"] <= 2
    assert "The results hold data of" in run.output
