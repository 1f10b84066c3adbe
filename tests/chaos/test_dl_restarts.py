"""A deep-learning server SIGKILLed mid-training and restarted by the launcher continues from its
checkpoint: the buffer, the network, the optimizer, the batch counter and the TensorBoard curves
go on (one curve, no step twice), every training sample enters the buffer exactly once, and the
final model is as good as that of the same study without the fault. And an active-sampling study
whose launcher is SIGKILLed resumes its generations."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from melissa.config.loader import strip_comments
from tests.chaos.conftest import STEPS, chaos_config, run_launcher, start_launcher
from tests.chaos.test_server_restarts import server_pid, wait_checkpoint, wait_completed
from tests.integration.conftest import REPO, LauncherRun

SIMS, HELD_OUT = 16, 2  # validation_fraction 0.125
PEAK_DIR = REPO / "examples" / "peak"


def dl_config(tmp_path: Path) -> dict[str, Any]:
    cfg = chaos_config(tmp_path, SIMS, step_s=0.15, job_limit=3, server_timeout=10)
    del cfg["sa_config"]
    cfg["dl_config"] = {
        "buffer": "reservoir", "batch_size": 4, "buffer_size": 200, "per_server_watermark": 8,
        "drain_batches": 150, "nb_batches_update": 10, "checkpoint_interval": 10,
        "validation_fraction": 0.125, "hidden_layers": [16], "device": "cpu", "cpu_threads": 1,
        "learning_rate": 0.01,
    }
    return cfg


def metrics(out: Path) -> list[dict[str, float]]:
    with open(out / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def test_a_killed_training_server_continues_where_it_was(tmp_path: Path) -> None:
    (tmp_path / "clean").mkdir()
    clean = run_launcher(dl_config(tmp_path / "clean"), tmp_path / "clean")
    assert clean.returncode == 0, clean.output

    launcher = start_launcher(tmp_path, dl_config(tmp_path))
    out = tmp_path / "out"
    first = server_pid(out)
    wait_completed(out / "study.db", 4)
    wait_checkpoint(out)  # the training has checkpointed its buffer at least once
    os.kill(first, signal.SIGKILL)
    output, _ = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, output
    assert re.search(r"server restarts +│ 1 ", output), output
    run = LauncherRun(launcher.returncode, output, out)
    assert [r["status"] for r in run.parameters()] == ["completed"] * SIMS

    log = (out / "logs" / "server.log").read_text()
    restored = re.search(r"restored the training buffer: (\d+) samples \((\d+) received", log)
    assert restored and int(restored.group(1)) > 0, log
    assert re.search(r"resumed from checkpoint: batch [1-9]\d*", log), log

    rows = metrics(out)
    batches = [int(r["batch"]) for r in rows]
    assert batches == sorted(set(batches)), batches  # the table goes on, no batch twice
    # Each training sample entered the buffer once: none lost, none counted twice as new.
    assert rows[-1]["buffer_received"] == (SIMS - HELD_OUT) * STEPS
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[0] < batches[-1], steps  # one curve
    assert steps == batches

    faulty = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["validation"]["loss"]
    reference = torch.load(clean.output_dir / "checkpoints" / "last.pt",
                           weights_only=True)["validation"]["loss"]
    assert faulty < 3 * reference + 1e-3, (faulty, reference)


def bred(db: Path) -> dict[int, tuple[int, str]]:
    """simulation id -> (generation, unit coordinates) of study.db's breed table, read-only."""
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return {s: (g, u) for s, g, u in
                    conn.execute("SELECT simulation_id, generation, unit FROM breed")}
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet
        return {}


def test_a_killed_breeding_launcher_resumes_its_generations(tmp_path: Path) -> None:
    """Active sampling survives `--resume`: the generations bred before the launcher died are
    kept as they were (study.db), the next ones are bred from there, to the same budget."""
    cfg = json.loads(strip_comments((PEAK_DIR / "config_breed.json").read_text()))
    cfg["output_dir"] = "out"
    cfg["study_options"]["parameter_sweep_size"] = 30
    cfg["dl_config"].update(drain_batches=200, checkpoint_interval=100)
    cfg["client_config"]["executable_command"] = (
        f"{sys.executable} {PEAK_DIR / 'peak.py'} --steps 4 --cells 8")
    cfg["launcher_config"]["poll_interval"] = 0.1
    launcher = start_launcher(tmp_path, cfg)
    db = tmp_path / "out" / "study.db"
    deadline = time.monotonic() + 120
    while max((g for g, _ in bred(db).values()), default=-1) < 1:
        assert launcher.poll() is None and time.monotonic() < deadline, "no generation 1"
        time.sleep(0.1)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    before = bred(db)

    run = run_launcher(cfg, tmp_path, "--resume")
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert len(rows) == 30 and {r["status"] for r in rows} == {"completed"}
    after = bred(db)
    assert {s: after[s] for s in before} == before  # what was bred stays as it was
    assert sorted(Counter(g for g, _ in after.values()).items()) == [(0, 10), (1, 10), (2, 10)]
    assert all(r["fitness"] != "" for r in rows)
    assert "resumed" in (run.output_dir / "logs" / "launcher.log").read_text()
