"""Data-parallel training over two server ranks (real MPI, real torch.distributed over gloo).

- uneven data: each rank's buffer holds a different amount, yet both run the same number of
  steps, stop together, end with identical weights, and those weights equal a single-process
  training on the union of the ranks' batches (gradients averaged by batch size);
- back-pressure: rank 0's full FIFO blocks its producer while rank 1 has no data and keeps
  receiving until rank 0's producer is done (as a study's FINISH waits for every simulation):
  the training must go on without rank 1's data, or nothing ever ends.

The ranks' buffers are filled directly, so that each step's batches are known; the receive path
that routes each simulation whole to one rank is run through the launcher in
test_deep_learning.py (docs/deep-learning.md, "Several server ranks")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from melissa.server.learning.torch_models import SurrogateMLP

BATCH, IN, OUT = 8, 3, 5

SCRIPT = """
import sys
import numpy as np
import torch
from mpi4py import MPI
from melissa.config import parse_config
from melissa.paths import StudyPaths
from melissa.server.learning import DeepLearningServer

comm = MPI.COMM_WORLD
scenario = sys.argv[4]
config = parse_config(open(sys.argv[1]).read(), "config")
server = DeepLearningServer(config, StudyPaths(config.output_dir), bytes(16), comm)
rank = comm.Get_rank()
data = np.load(sys.argv[2])
items = list(zip(data[f"x{rank}"], data[f"y{rank}"]))
if scenario == "uneven":  # everything in first: each step's batches are known in advance
    for item in items:
        server.buffer.put(item)
    server.buffer.end_reception()
    server.start_training()
else:  # back-pressure: rank 1 receives until rank 0 has put everything
    server.start_training()
    for item in items:
        server.buffer.put(item, timeout=60)
    comm.Barrier()
    server.buffer.end_reception()
import time
deadline = time.monotonic() + 120
while not server.training_done(timeout=0.05):  # the receive loop's part: write checkpoints
    server.serve_checkpoint_request()
    assert time.monotonic() < deadline, "training did not end"
assert server.training_error() is None, server.training_error()
trainer = server.trainer
weights = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]).numpy()
gathered = comm.gather((trainer.batches, trainer.samples, weights), root=0)
if rank == 0:
    np.savez(sys.argv[3], batches=[g[0] for g in gathered], samples=[g[1] for g in gathered],
             weights=np.stack([g[2] for g in gathered]))
server.close()
"""


def run_ranks(tmp_path: Path, scenario: str, samples: tuple[int, int], buffer_size: int
              ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("no mpiexec next to the interpreter (pip install mpich mpi4py)")
    rng = np.random.default_rng(0)
    xs = [rng.random((n, IN), dtype=np.float32) for n in samples]
    ys = [(x @ rng.random((IN, OUT), dtype=np.float32)).astype(np.float32) for x in xs]
    np.savez(tmp_path / "data.npz", x0=xs[0], y0=ys[0], x1=xs[1], y1=ys[1])
    (tmp_path / "out").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({
        "output_dir": str(tmp_path / "out"),
        "study_options": {"field_names": ["u"], "nb_time_steps": 1, "parameter_sweep_size": 4,
                          "seed": 9},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
        "dl_config": {"buffer": "fifo", "batch_size": BATCH, "buffer_size": buffer_size,
                      "per_server_watermark": BATCH, "nb_batches_update": 3,
                      "validation_fraction": 0, "hidden_layers": [16], "learning_rate": 0.01,
                      "device": "cpu", "cpu_threads": 1},
        "client_config": {"executable_command": "unused"},  # the ranks come from mpiexec
    }))
    (tmp_path / "ranks.py").write_text(SCRIPT)
    proc = subprocess.run(
        [str(mpiexec), "-n", "2", sys.executable, str(tmp_path / "ranks.py"),
         str(tmp_path / "config.json"), str(tmp_path / "data.npz"), str(tmp_path / "out.npz"),
         scenario],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return xs, ys, dict(np.load(tmp_path / "out.npz"))


@pytest.mark.parametrize("samples", [(50, 13), (20, 0)])
def test_two_ranks_stay_in_step_and_average_gradients(
    tmp_path: Path, samples: tuple[int, int]
) -> None:
    xs, ys, result = run_ranks(tmp_path, "uneven", samples, buffer_size=64)
    steps = -(-max(samples) // BATCH)
    assert list(result["batches"]) == [steps, steps]
    assert list(result["samples"]) == [sum(samples)] * 2
    np.testing.assert_array_equal(result["weights"][0], result["weights"][1])

    # The same steps in one process, each on the union of both ranks' k-th batches.
    y0 = torch.from_numpy(ys[0][:BATCH])  # rank 0's first batch sets the output scale
    torch.manual_seed(9)  # study_options.seed: the same initial weights
    reference = SurrogateMLP(IN, OUT, [16], float(y0.mean()), float(y0.std()))
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    for k in range(steps):
        x = np.concatenate([x[k * BATCH:(k + 1) * BATCH] for x in xs])
        y = np.concatenate([y[k * BATCH:(k + 1) * BATCH] for y in ys])
        optimizer.zero_grad()
        F.mse_loss(reference(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimizer.step()
    expected = torch.cat([p.detach().reshape(-1) for p in reference.parameters()]).numpy()
    np.testing.assert_allclose(result["weights"][0], expected, rtol=1e-4, atol=1e-6)
    saved = torch.load(tmp_path / "out" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["batches"] == steps  # rank 0 wrote it
    np.testing.assert_allclose(
        torch.cat([p.reshape(-1) for k, p in saved["model"].items() if k.startswith("net")]),
        expected, rtol=1e-4, atol=1e-6)


def test_a_rank_without_data_does_not_stall_a_rank_whose_buffer_is_full(tmp_path: Path) -> None:
    _, _, result = run_ranks(tmp_path, "backpressure", (60, 0), buffer_size=BATCH)
    assert list(result["samples"]) == [60, 60]
    assert result["batches"][0] == result["batches"][1] >= 60 // BATCH
    np.testing.assert_array_equal(result["weights"][0], result["weights"][1])
