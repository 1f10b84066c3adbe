"""The TensorFlow/Keras 3 server end to end (dl_config.framework "tensorflow"): the heat
example's config_dl_tf.json and custom_server_tf.py, made as small as the PyTorch heat test, train
to the same accuracy bar; metrics, TensorBoard and the model file; and neither torch nor
TensorFlow is imported where it is not needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from melissa.config.loader import strip_comments
from tests.integration.test_deep_learning import (
    HEAT_DIR,
    MARGIN,
    NX,
    SIMS,
    STEPS,
    ensemble,
    inputs,
    metrics,
    module,
    rmse,
)


def tf_config(**dl: Any) -> dict[str, Any]:
    cfg = json.loads(strip_comments((HEAT_DIR / "config_dl_tf.json").read_text()))
    cfg["output_dir"] = "out"
    cfg["server_config"]["server_filename"] = str(HEAT_DIR / "custom_server_tf.py")
    cfg["study_options"].update(nb_time_steps=STEPS, parameter_sweep_size=SIMS, seed=3)
    # The same training as the PyTorch heat test (test_deep_learning.py).
    cfg["dl_config"].update(batch_size=16, buffer_size=600, per_server_watermark=32,
                            drain_batches=1200, nb_batches_update=20, checkpoint_interval=300,
                            learning_rate=0.003, validation_fraction=0.2, hidden_layers=[64, 64],
                            **dl)
    cfg["client_config"]["executable_command"] = (
        f"python3 {HEAT_DIR / 'heat.py'} --nx {NX} --ny {NX} --steps {STEPS}")
    cfg["launcher_config"] = {"job_limit": 2}
    return cfg


def test_heat_surrogate_trains_with_tensorflow(launcher: Any) -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    heat = module(HEAT_DIR / "heat.py")
    run = launcher(tf_config())
    assert run.returncode == 0, run.output
    rows = metrics(run)
    assert rows[0]["buffer_received"] < rows[-1]["buffer_received"]  # trained while streaming
    assert rows[-1]["validation_loss"] < rows[0]["validation_loss"] / 10
    study, params, fields, held_out = ensemble(run, heat.simulate, nx=NX, ny=NX, nb_steps=STEPS)
    assert rows[-1]["buffer_received"] == (SIMS - held_out.sum()) * STEPS

    info = json.loads((run.output_dir / "checkpoints" / "last.json").read_text())
    assert info["batches"] == rows[-1]["batch"]
    model = keras.saving.load_model(run.output_dir / "checkpoints" / "last.keras")
    scaled = np.asarray(model(inputs(study, params[held_out], STEPS), training=False))
    predicted = 300.0 + 200.0 * scaled.reshape(held_out.sum(), STEPS, -1)
    surrogate = rmse(predicted, fields[held_out])
    assert surrogate == pytest.approx(np.sqrt(info["validation"]["loss"]) * 200.0, rel=1e-3)
    baseline = rmse(fields[~held_out].mean(axis=0)[None], fields[held_out])
    assert surrogate < MARGIN * baseline, (surrogate, baseline)  # the PyTorch test's bar

    events = EventAccumulator(str(run.output_dir / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert len(events.Scalars("validation/rmse_kelvin")) == len(rows)


def test_each_path_imports_only_its_framework(tmp_path: Path) -> None:
    code = ("import sys, melissa.client, melissa.server.sa.sensitivity; "
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules; "
            "import melissa.server.learning.tensorboard as tb; tb.without_tensorflow(); "
            "from torch.utils.tensorboard import SummaryWriter; "
            "SummaryWriter(sys.argv[1]).add_scalar('a', 1.0, 1); "
            "assert 'tensorflow' not in sys.modules, 'torch path imported tensorflow'; "
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, check=False,
                          timeout=120, cwd=Path(__file__).parent)
    assert proc.stdout.strip() == "ok", proc.stderr
    code = ("import sys, melissa.server.learning.tf_server; "
            "assert 'torch' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr
