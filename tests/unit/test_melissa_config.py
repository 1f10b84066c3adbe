"""Melissa's config keys: accepted where they mean the same as ours, refused with one line each
naming what to write instead, and marked in --print-options; study_options.field_shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from melissa.config import parse_config
from melissa.config.melissa_compat import ACCEPTED, REFUSED, SAME_AS_MELISSA
from melissa.config.options import melissa_lines, option_lines
from melissa.errors import ConfigError

# What the current Melissa's heat example config looks like (its keys, our parameters list).
MELISSA: dict[str, Any] = {
    "server_filename": "unused.py",
    "server_class": "HeatServer",
    "output_dir": "STUDY_OUT",
    "study_options": {"field_names": ["temperature"], "parameter_sweep_size": 10,
                      "num_samples": 100, "nb_parameters": 2, "simulation_timeout": 10,
                      "crashes_before_redraw": 1000, "verbosity": 3, "seed": 123},
    "parameters": [{"name": "a", "distribution": "uniform", "low": 100, "high": 500},
                   {"name": "b", "distribution": "uniform", "low": 100, "high": 500}],
    "sa_config": {"mean": True, "variance": True, "skewness": True, "kurtosis": True,
                  "sobol_indices": False, "checkpoint_interval": 300},
    "launcher_config": {"scheduler": "openmpi", "scheduler_arg": ["--bind-to", "none"],
                        "scheduler_arg_client": ["--tag-output"], "job_limit": 2,
                        "timer_delay": 1, "fault_tolerance": False, "verbosity": 3},
    "client_config": {"executable_command": "./heatc", "command_default_args": ["-n", 100]},
}


def parse(cfg: dict[str, Any]) -> Any:
    return parse_config(json.dumps(cfg), "config.json")


def without_server_class(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in ("server_filename", "server_class")}


def test_melissa_keys_mean_ours() -> None:
    config = parse(without_server_class(MELISSA))
    so, lc = config.study_options, config.launcher_config
    assert so.nb_time_steps == 100 and so.parameter_sweep_size == 10 and so.seed == 123
    assert so.simulation_timeout == 10 and so.crashes_before_redraw == 1000
    assert lc.poll_interval == 1 and lc.verbosity == 3 and lc.scheduler == "openmpi"
    assert lc.scheduler_arg_client == ["--bind-to", "none", "--tag-output"]
    assert lc.scheduler_arg_server == ["--bind-to", "none"]
    assert config.client_config.executable_command == "./heatc -n 100"
    assert config.sa.checkpoint_interval == 300 and config.sa.kurtosis


def test_top_level_server_class_moves_to_server_config() -> None:
    config = parse(MELISSA)
    assert config.server_config.server_filename == "unused.py"
    assert config.server_config.server_class == "HeatServer"


def test_melissa_sa_names() -> None:
    cfg = without_server_class(MELISSA)
    cfg["study_options"] = {"field_names": ["heat1"], "sampling_size": 6, "nb_timesteps": 4}
    so = parse(cfg).study_options
    assert so.parameter_sweep_size == 6 and so.nb_time_steps == 4


@pytest.mark.parametrize(("change", "message"), [
    ({"nb_parameters": 5},
     ("config.json: study_options.nb_parameters: 5, but parameters lists 2 (Melissa's count of "
      "parameters must match the list; remove it or fix it)")),
    ({"nb_time_steps": 50},
     ("config.json: study_options.num_samples: Melissa's name for study_options.nb_time_steps, "
      "which is also given, with another value (50 vs 100): keep one")),
])
def test_melissa_keys_checked(change: dict[str, Any], message: str) -> None:
    cfg = without_server_class(MELISSA)
    cfg["study_options"] = {**cfg["study_options"], **change}
    with pytest.raises(ConfigError) as info:
        parse(cfg)
    assert str(info.value) == message


@pytest.mark.parametrize("path", sorted(REFUSED))
def test_each_refused_key_names_its_replacement(path: str) -> None:
    cfg = json.loads(json.dumps(without_server_class(MELISSA)))
    section, _, key = path.rpartition(".")
    cfg.setdefault(section, {})[key] = 1
    with pytest.raises(ConfigError) as info:
        parse(cfg)
    assert str(info.value) == f"config.json: {path}: Melissa's key, not used here: {REFUSED[path]}"


def test_refused_keys_one_line_each() -> None:
    cfg = without_server_class(MELISSA)
    cfg["study_options"] = {**cfg["study_options"], "parameter_range": [100, 500],
                            "coupling": "MELISSA_COUPLING_MPI"}
    cfg["launcher_config"] = {**cfg["launcher_config"], "scheduler": "slurm-semiglobal",
                              "std_output": True}
    with pytest.raises(ConfigError) as info:
        parse(cfg)
    lines = str(info.value).splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("config.json: study_options.parameter_range: Melissa's key, not "
                               'used here: declare each parameter in "parameters"')
    assert lines[-1] == ('config.json: launcher_config.scheduler: Melissa\'s "slurm-semiglobal": '
                         'write "slurm" (one batch job per simulation)')


def test_print_options_marks_melissa_keys() -> None:
    lines = list(option_lines())
    marked = {line.split(":")[0].strip() for line in lines if "[Melissa]" in line}
    assert marked == SAME_AS_MELISSA
    text = "\n".join(melissa_lines())
    for path in [*ACCEPTED, *REFUSED]:
        assert f"  {path}" in text


@pytest.mark.parametrize(("shapes", "message"), [
    ({"heat2": [2, 5]}, "field_shapes names ['heat2'], which are not in field_names"),
    ({"heat1": []}, "field_shapes: a shape lists at least one dimension"),
    ({"heat1": [0, 5]}, "study_options.field_shapes.heat1[0]: Input should be greater than 0"),
])
def test_field_shapes_checked(shapes: dict[str, Any], message: str) -> None:
    cfg = without_server_class(MELISSA)
    cfg["study_options"] = {"field_names": ["heat1"], "nb_time_steps": 1,
                            "parameter_sweep_size": 1, "field_shapes": shapes}
    with pytest.raises(ConfigError) as info:
        parse(cfg)
    assert message in str(info.value)
