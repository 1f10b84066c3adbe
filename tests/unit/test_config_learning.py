"""The analysis rule (exactly one of sa_config / dl_config; neither means SA with defaults),
dl_config's constraints, the validation hold-out, and server_config's custom server keys."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from melissa.config import load_config, parse_config
from melissa.config.models import DLConfig
from melissa.errors import ConfigError
from melissa.server.select import load_server_class, server_class

BASE: dict[str, Any] = {
    "study_options": {"field_names": ["T"], "nb_time_steps": 3, "parameter_sweep_size": 20},
    "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
    "client_config": {"executable_command": "python3 sim.py"},
}


def config(**sections: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    cfg.update(sections)
    return cfg


def parse(cfg: dict[str, Any]) -> Any:
    return parse_config(json.dumps(cfg), "c.json")


def test_neither_section_is_a_sensitivity_analysis_with_mean_and_variance() -> None:
    study = parse(config())
    assert study.dl_config is None and study.sa_config is not None
    assert (study.sa.mean, study.sa.variance, study.sa.skewness) == (True, True, False)
    assert parse(config(sa_config=None)).sa.mean  # null counts as absent


def test_dl_config_alone_is_a_training_study_and_round_trips() -> None:
    study = parse(config(dl_config={"buffer": "firo"}))
    assert study.sa_config is None and study.dl_config.buffer == "firo"
    again = parse(study.model_dump(mode="json"))  # what the server reads from study.json
    assert again == study
    with pytest.raises(ValueError, match="has no sa_config"):
        _ = study.sa


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"sa_config": {}, "dl_config": {}},
         ("c.json: (top level): sa_config and dl_config are both given: a study either computes "
          "statistics (sa_config) or trains a surrogate (dl_config)")),
        ({"dl_config": {"buffer": "lifo"}},
         "c.json: dl_config.buffer: Input should be 'fifo', 'firo', 'reservoir', 'batch_reservoir' or 'sim_paired_reservoir', got \"lifo\""),
        ({"dl_config": {"buffer_size": 100}},
         ("c.json: dl_config: per_server_watermark (1000) exceeds buffer_size (100): training "
          "would never start")),
        ({"dl_config": {"buffer_size": 10, "per_server_watermark": 5, "batch_size": 11}},
         "c.json: dl_config: batch_size (11) exceeds buffer_size (10)"),
        ({"dl_config": {"validation_fraction": 1.0}},
         "c.json: dl_config.validation_fraction: Input should be less than 1, got 1.0"),
        ({"dl_config": {"validation_fraction": 0.99}},
         ("c.json: (top level): dl_config.validation_fraction 0.99 holds out 20 of the 20 "
          "simulations: none is left to train on")),
        ({"dl_config": {"hidden_layers": [8, 0]}},
         "c.json: dl_config.hidden_layers[1]: Input should be greater than 0, got 0"),
        ({"dl_config": {"device": "tpu"}},
         "c.json: dl_config.device: Input should be 'auto', 'cpu' or 'cuda', got \"tpu\""),
        ({"dl_config": {"batchsize": 3}},
         "c.json: dl_config.batchsize: unknown key (see melissa-launcher --print-options)"),
        ({"server_config": {"server_class": "S"}},
         ("c.json: server_config: server_filename and server_class go together: give both or "
          "neither")),
        ({"server_config": {"server_filename": "s.py", "server_class": "not a name"}},
         ("c.json: server_config.server_class: String should match pattern "
          "'^[A-Za-z_][A-Za-z0-9_]*$', got \"not a name\"")),
    ],
)
def test_bad_sections(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(config(**sections))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("fraction", "size", "expected"),
    [(0.0, 10, set()), (0.1, 10, {5}), (0.2, 20, {2, 7, 12, 17}), (0.01, 7, {3}),
     (0.25, 8, {2, 6}), (0.5, 3, {0, 2})],
)
def test_validation_simulations_are_evenly_spread(
    fraction: float, size: int, expected: set[int]
) -> None:
    held_out = DLConfig(validation_fraction=fraction).validation_simulations(size)
    assert held_out == expected
    assert all(0 <= i < size for i in held_out)


SERVER = """
from melissa.server.base import Server

class Mine(Server):
    pass

class NotAServer:
    pass
"""


def test_custom_server_path_is_resolved_from_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / "mine.py").write_text(SERVER)
    cfg = config(server_config={"server_filename": "servers/mine.py", "server_class": "Mine"})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    loaded = load_config(path)
    server_file = Path(loaded.config.server_config.server_filename)
    assert server_file == tmp_path / "servers" / "mine.py"
    assert server_class(loaded.config).__name__ == "Mine"


def test_missing_custom_server_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config(
        server_config={"server_filename": "nope.py", "server_class": "Mine"})))
    with pytest.raises(ConfigError, match=r"server_config.server_filename: no file .*nope.py"):
        load_config(path)


def test_custom_server_class_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(SERVER)
    with pytest.raises(ConfigError, match=r"no class 'Other' in it .*\['Mine', 'NotAServer'"):
        load_server_class(path, "Other")
    with pytest.raises(ConfigError, match="NotAServer is not a subclass of melissa's Server"):
        load_server_class(path, "NotAServer")
    broken = tmp_path / "broken.py"
    broken.write_text("import does_not_exist\n")
    with pytest.raises(ConfigError, match="importing it failed: ModuleNotFoundError"):
        load_server_class(broken, "Mine")


def test_the_analysis_picks_the_server_without_importing_torch_for_statistics() -> None:
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from melissa.config import parse_config\n"
        "from melissa.server.select import server_class\n"
        f"cfg = parse_config({json.dumps(json.dumps(BASE))}, 'c')\n"
        "print(server_class(cfg).__name__, 'torch' in sys.modules)\n"
        "import melissa.client, melissa.server.learning.buffers, melissa.server.learning.receiver\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["SensitivityServer", "False", "False"]
    dl = parse(config(dl_config={}))
    assert server_class(dl).__name__ == "DeepLearningServer"
