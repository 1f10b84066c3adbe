"""Melissa's config.json keys: those that mean the same as ours are accepted (moved to our name,
or checked), those that do not are refused with one line each saying what to write instead.

Runs on the parsed JSON before validation (loader.parse_config), so the models only know this
project's names; `melissa-launcher --print-options` marks Melissa's keys from the tables here.
The mapping of every Melissa concept is in docs/migrating-from-melissa.md.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from melissa.errors import ConfigError

# Keys this project shares with Melissa, under the same name and meaning.
SAME_AS_MELISSA = frozenset({
    "output_dir",
    "study_options.field_names", "study_options.parameter_sweep_size", "study_options.seed",
    "study_options.simulation_timeout", "study_options.crashes_before_redraw",
    "sa_config.mean", "sa_config.variance", "sa_config.skewness", "sa_config.kurtosis",
    "sa_config.min", "sa_config.max", "sa_config.threshold_exceedance", "sa_config.sobol_indices",
    "sa_config.checkpoint_interval",
    "dl_config.batch_size",
    "client_config.executable_command", "client_config.preprocessing_commands",
    "server_config.server_filename", "server_config.server_class",
    "launcher_config.scheduler", "launcher_config.scheduler_arg_client",
    "launcher_config.scheduler_arg_server", "launcher_config.job_limit",
    "launcher_config.fault_tolerance", "launcher_config.verbosity",
})

# Melissa's keys accepted under another name here: Melissa's path -> what it becomes.
ACCEPTED = {
    "server_filename": "server_config.server_filename (Melissa has it at the top level)",
    "server_class": "server_config.server_class (Melissa has it at the top level)",
    "study_options.nb_parameters": "checked against the number of entries of parameters",
    "study_options.num_samples": "study_options.nb_time_steps",
    "study_options.nb_timesteps": "study_options.nb_time_steps (Melissa-SA)",
    "study_options.sampling_size": "study_options.parameter_sweep_size (Melissa-SA)",
    "study_options.verbosity": "launcher_config.verbosity",
    "launcher_config.timer_delay": "launcher_config.poll_interval",
    "launcher_config.scheduler_arg":
        "appended to launcher_config.scheduler_arg_client and scheduler_arg_server",
    "client_config.command_default_args":
        "appended to client_config.executable_command, before the parameter values",
}

# Melissa's keys that mean something else or nothing here: Melissa's path -> what to write.
REFUSED = {
    "study_options.parameter_range":
        'declare each parameter in "parameters" with its own range, e.g. {"name": "t0", '
        '"distribution": "uniform", "low": 100, "high": 500}',
    "study_options.coupling":
        "remove it: the simulations of a Sobol' group are independent jobs here, coupled "
        "through the server (no MPI or FlowVR coupling)",
    "study_options.threshold_values": "write sa_config.threshold_values",
    "study_options.quantile_values": "write sa_config.quantiles (the levels, in (0, 1))",
    "study_options.working_directory": "write output_dir",
    "study_options.server_timeout": "write launcher_config.server_timeout",
    "study_options.batch_size":
        "remove it: each simulation is its own job (the Melissa-SA batches of simulations per "
        "job do not exist here; launcher_config.job_limit bounds the jobs at once)",
    "sa_config.quantile": "write sa_config.quantiles (the levels, in (0, 1))",
    "launcher_config.std_output":
        "remove it: each simulation's output always goes to output_dir/logs/simulation_<id>.log",
    "launcher_config.load_from_checkpoint":
        "remove it and run melissa-launcher --resume (the server restarts from its checkpoints "
        "by itself)",
    "server_config.preprocessing_commands":
        "remove it: set the server's environment in the shell that starts melissa-launcher "
        "(local) or with launcher_config.scheduler_arg_server (batch)",
}

# Melissa's scheduler names that are not ours.
_SCHEDULERS = {"slurm-semiglobal": "slurm", "slurm-global": "slurm", "slurm-openmpi": "slurm"}


def translate(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` with Melissa's accepted keys under this project's names; ConfigError (one line
    per key) for the refused ones."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    errors = [f"{source}: {path}: Melissa's key, not used here: {advice}"
              for path, advice in REFUSED.items() if _get(data, path) is not _MISSING]
    scheduler = _get(data, "launcher_config.scheduler")
    if isinstance(scheduler, str) and scheduler in _SCHEDULERS:
        errors.append(f"{source}: launcher_config.scheduler: Melissa's {json.dumps(scheduler)}: "
                      f'write "{_SCHEDULERS[scheduler]}" (one batch job per simulation)')
    for path, move in _MOVES.items():
        value = _pop(data, path)
        if value is not _MISSING:
            problem = move(data, value)
            if problem:
                errors.append(f"{source}: {path}: {problem}")
    if errors:
        raise ConfigError("\n".join(errors))
    return data


class _Missing:
    pass


_MISSING: Any = _Missing()


def _get(data: dict[str, Any], path: str) -> Any:
    section, _, key = path.rpartition(".")
    node = data.get(section) if section else data
    return node.get(key, _MISSING) if isinstance(node, dict) else _MISSING


def _pop(data: dict[str, Any], path: str) -> Any:
    section, _, key = path.rpartition(".")
    node = data.get(section) if section else data
    return node.pop(key, _MISSING) if isinstance(node, dict) else _MISSING


def _put(data: dict[str, Any], path: str, value: Any) -> str | None:
    """Set our key from Melissa's; an error when both are given with different values."""
    section, _, key = path.rpartition(".")
    node = data.setdefault(section, {})
    if not isinstance(node, dict):
        return None  # the section's own error comes from validation
    if key in node and node[key] != value:
        return (f"Melissa's name for {path}, which is also given, with another value "
                f"({json.dumps(node[key])} vs {json.dumps(value)}): keep one")
    node[key] = value
    return None


def _rename(path: str) -> Callable[[dict[str, Any], Any], str | None]:
    return lambda data, value: _put(data, path, value)


def _nb_parameters(data: dict[str, Any], value: Any) -> str | None:
    declared = data.get("parameters")
    if isinstance(declared, list) and value != len(declared):
        return (f"{json.dumps(value)}, but parameters lists {len(declared)} (Melissa's count of "
                "parameters must match the list; remove it or fix it)")
    return None


def _scheduler_arg(data: dict[str, Any], value: Any) -> str | None:
    if not isinstance(value, list):
        return f"a list of options, got {json.dumps(value)}"
    section = data.setdefault("launcher_config", {})
    for key in ("scheduler_arg_client", "scheduler_arg_server"):
        if isinstance(section.get(key, []), list):
            section[key] = [*value, *section.get(key, [])]
    return None


def _default_args(data: dict[str, Any], value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(a, (str, int, float)) for a in value):
        return f"a list of arguments, got {json.dumps(value)}"
    client = data.setdefault("client_config", {})
    command = client.get("executable_command")
    if isinstance(command, str):
        client["executable_command"] = " ".join([command, *(shlex.quote(str(a)) for a in value)])
    return None


_MOVES: dict[str, Callable[[dict[str, Any], Any], str | None]] = {
    "server_filename": _rename("server_config.server_filename"),
    "server_class": _rename("server_config.server_class"),
    "study_options.nb_parameters": _nb_parameters,
    "study_options.num_samples": _rename("study_options.nb_time_steps"),
    "study_options.nb_timesteps": _rename("study_options.nb_time_steps"),
    "study_options.sampling_size": _rename("study_options.parameter_sweep_size"),
    "study_options.verbosity": _rename("launcher_config.verbosity"),
    "launcher_config.timer_delay": _rename("launcher_config.poll_interval"),
    "launcher_config.scheduler_arg": _scheduler_arg,
    "client_config.command_default_args": _default_args,
}
