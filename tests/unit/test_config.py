"""Config loading: comments, defaults, and a table of bad configs with their exact messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from melissa.config import load_config, parse_config
from melissa.config.loader import strip_comments
from melissa.config.options import option_lines
from melissa.errors import ConfigError

GOOD: dict[str, Any] = {
    "output_dir": "out",
    "study_options": {"field_names": ["T"], "nb_time_steps": 3, "parameter_sweep_size": 4},
    "parameters": [
        {"name": "a", "distribution": "uniform", "low": 0, "high": 1},
        {"name": "b", "distribution": "normal", "mean": 0, "std": 2},
        {"name": "c", "distribution": "loguniform", "low": 1e-3, "high": 1},
    ],
    "client_config": {"executable_command": "python3 sim.py"},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the key at dotted `path` set to `value` (or deleted when value is ...)."""
    cfg = copy.deepcopy(GOOD)
    node: Any = cfg
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node.setdefault(k, {}) if isinstance(k, str) else node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


BAD = [
    (with_change("study_options.nb_time_steps", 0),
     "c.json: study_options.nb_time_steps: Input should be greater than 0, got 0"),
    (with_change("study_options.nb_time_steps", "ten"),
     ('c.json: study_options.nb_time_steps: expected an integer, got the string "ten" (write '
      'it without quotes)')),
    # Strict types: no silent coercion of strings to numbers or booleans.
    (with_change("study_options.parameter_sweep_size", "6"),
     ('c.json: study_options.parameter_sweep_size: expected an integer, got the string "6" '
      '(write it without quotes)')),
    (with_change("sa_config", {"mean": "yes"}),
     'c.json: sa_config.mean: expected true or false, got the string "yes" (write it without quotes)'),
    (with_change("sa_config", {"mean": 1}),
     "c.json: sa_config.mean: Input should be a valid boolean, got 1"),
    (with_change("dl_config", {"learning_rate": "1e-4"}),
     ('c.json: dl_config.learning_rate: expected a number, got the string "1e-4" (write it '
      'without quotes)')),
    (with_change("study_options.nb_time_steps", 2.5),
     "c.json: study_options.nb_time_steps: Input should be a valid integer, got 2.5"),
    (with_change("study_options.field_names", ...),
     "c.json: study_options.field_names: required key is missing"),
    (with_change("study_options.field_names", ["T", "T"]),
     "c.json: study_options.field_names: field names must be unique, got ['T', 'T']"),
    (with_change("study_options.fields", ["T"]),
     "c.json: study_options.fields: unknown key (see melissa-launcher --print-options)"),
    (with_change("parameters.0.high", -1),
     "c.json: parameters[0]: low (0.0) must be smaller than high (-1.0)"),
    (with_change("parameters.1.distribution", "gauss"),
     ("c.json: parameters[1].distribution: \"gauss\" is not one of 'uniform', 'loguniform', "
     "'normal'")),
    (with_change("parameters.1.std", -2),
     "c.json: parameters[1].std: Input should be greater than 0, got -2"),
    (with_change("parameters.2.low", 0),
     "c.json: parameters[2]: log-uniform bounds must be positive, got low=0.0"),
    (with_change("parameters", []),
     "c.json: parameters: List should have at least 1 item after validation, not 0"),
    (with_change("sampling", {"method": "grid"}),
     "c.json: sampling.method: Input should be 'random', 'lhs', 'sobol', 'halton' or 'breed', got \"grid\""),
    (with_change("sa_config", {"threshold_exceedance": True}),
     "c.json: sa_config: threshold_exceedance is true but threshold_values is empty"),
    (with_change("sa_config", {"mean": False, "variance": False}),
     "c.json: sa_config: no statistic selected: set at least one of mean, variance, ..."),
    (with_change("sa_config", {"stop_when": {"figure": "mean_error", "below": 0.1}}),
     ("c.json: sa_config.stop_when.figure: unknown figure 'mean_error': choose one of "
      "['mean_stderr', 'sobol_interval'], got \"mean_error\"")),
    (with_change("sa_config", {"stop_when": {"figure": "mean_stderr", "below": 0}}),
     "c.json: sa_config.stop_when.below: Input should be greater than 0, got 0"),
    (with_change("sa_config", {"stop_when": {"figure": "mean_stderr", "below": 0.1,
                                             "min_simulations": 1}}),
     ("c.json: sa_config.stop_when.min_simulations: Input should be greater than or equal to "
      "2, got 1")),
    (with_change("sa_config", {"variance": False, "stop_when": {"figure": "mean_stderr",
                                                                "below": 0.1}}),
     ("c.json: sa_config: stop_when figure 'mean_stderr' needs variance: set "
      "sa_config.variance to true")),
    (with_change("sa_config", {"stop_when": {"below": 0.1}}),
     "c.json: sa_config.stop_when.figure: required key is missing"),
    (with_change("client_config.executable_command", ""),
     ("c.json: client_config.executable_command: String should have at least 1 character, "
     'got ""')),
    (with_change("launcher_config", {"job_limit": 0}),
     "c.json: launcher_config.job_limit: Input should be greater than or equal to 1, got 0"),
    (with_change("launcher_config", {"scheduler": "pbs"}),
     ("c.json: launcher_config.scheduler: Input should be one of local, oar, openmpi, slurm, "
      "slurm-steps (or a plugin's scheduler: see docs/schedulers.md), got \"pbs\"")),
    (with_change("launcher_config", {"scheduler_arg_client": "--time=10"}),
     'c.json: launcher_config.scheduler_arg_client: Input should be a valid list, got "--time=10"'),
    (with_change("launcher_config", {"scheduler_arg_server": ["--time=10", ""]}),
     ('c.json: launcher_config.scheduler_arg_server[1]: String should have at least 1 character, '
      'got ""')),
    (with_change("launcher_config", {"scheduler_arg_client": ["--comment=a\nb"]}),
     ("c.json: launcher_config.scheduler_arg_client[0]: a scheduler argument is one line, "
      "got '--comment=a\\nb'")),
    (with_change("launcher_config", {"mpi_launcher_args": [3]}),
     "c.json: launcher_config.mpi_launcher_args[0]: Input should be a valid string, got 3"),
    (with_change("launcher_config", {"http_port": 70000}),
     "c.json: launcher_config.http_port: Input should be less than or equal to 65535, got 70000"),
    (with_change("launcher_config", {"http_bind": ""}),
     'c.json: launcher_config.http_bind: String should have at least 1 character, got ""'),
]


@pytest.mark.parametrize(("config", "message"), BAD)
def test_bad_config_messages(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(config), "c.json")
    assert str(info.value) == message


def test_several_errors_are_all_reported() -> None:
    cfg = with_change("study_options.nb_time_steps", -1)
    cfg["client_config"] = {}
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(cfg), "c.json")
    assert str(info.value).splitlines() == [
        "c.json: study_options.nb_time_steps: Input should be greater than 0, got -1",
        "c.json: client_config.executable_command: required key is missing",
    ]


def test_comments_and_defaults(tmp_path: Path) -> None:
    text = '{ // a study\n' + json.dumps(GOOD)[1:].replace('sim.py"', 'sim.py // x"')
    path = tmp_path / "config.json"
    path.write_text(text)
    loaded = load_config(path)
    assert loaded.config.client_config.executable_command == "python3 sim.py // x"
    assert loaded.output_dir == (tmp_path / "out").resolve()
    assert loaded.config.launcher_config.job_limit == 4
    launcher = loaded.config.launcher_config
    assert (launcher.scheduler, launcher.scheduler_arg_client, launcher.http_port,
            launcher.http_bind) == ("local", [], 0, "127.0.0.1")
    assert loaded.config.sa_config.moment_order == 2


def test_strip_comments_keeps_strings() -> None:
    assert strip_comments('{"a": "x//y\\"//z"} // c') == '{"a": "x//y\\"//z"} '


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "config file not found"),
        ("{", "not valid JSON at line 1, column 2"),
        ("[1, 2]", "the top level must be a JSON object"),
    ],
)
def test_unreadable_files_give_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_print_options_lists_every_key() -> None:
    text = "\n".join(option_lines())
    for key in ("study_options.nb_time_steps", "parameters[].low", "parameters[].std",
                "sa_config.threshold_values", "launcher_config.job_limit", "output_dir",
                "launcher_config.scheduler_arg_client", "launcher_config.scheduler_arg_server",
                "launcher_config.mpi_launcher_args", "launcher_config.http_port",
                "launcher_config.http_bind"):
        assert key in text
