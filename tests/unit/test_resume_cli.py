"""`melissa-launcher --resume`: what it refuses, in one line, before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from melissa.config import load_config
from melissa.launcher.cli import main
from melissa.launcher.state import StateStore


def write_config(tmp_path: Path, high: float = 1.0) -> Path:
    config: dict[str, Any] = {
        "output_dir": "out",
        "study_options": {"field_names": ["f"], "nb_time_steps": 2, "parameter_sweep_size": 2},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": high}],
        "client_config": {"executable_command": "true"},
    }
    path = tmp_path / f"config_{high}.json"
    path.write_text(json.dumps(config))
    return path


def test_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    for argv, message in [
        (["--resume", "-c", config, "--overwrite"], "give one"),
        (["--resume", str(tmp_path), "-c", config], "not both"),
        (["--resume"], "give the study's config with -c config.json"),
        (["--resume", str(tmp_path / "nowhere")], "no Melissa study in"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_a_changed_study_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = load_config(write_config(tmp_path))
    (tmp_path / "out").mkdir()
    stored = started.config.model_dump(mode="json") | {"output_dir": str(started.output_dir)}
    store = StateStore(started.output_dir / "study.db")
    store.init_study("ab" * 16, json.dumps(stored), ["p"], str(started.path))
    store.close()

    assert main(["--resume", "-c", str(write_config(tmp_path, high=2.0))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("melissa-launcher: error: this config differs from the study in ")
    assert err.rstrip().endswith("in parameters: resume with the config that started it (only "
                                 "launcher_config may change)")
    assert "Traceback" not in err
