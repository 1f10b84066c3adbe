"""How one simulation is started: its command, environment and log (a study's and --try-one's)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from melissa.config import LoadedConfig
from melissa.launcher.schedulers.base import JobSpec
from melissa.launcher.server_job import job_environment


def client_job_spec(
    loaded: LoadedConfig,
    simulation_id: int,
    attempt: int,
    parameters: Sequence[float],
    names: Sequence[str],
    server_address: str,
    token_hex: str,
    server_key: str | None,
    log_path: Path,
) -> JobSpec:
    """The job of one simulation attempt: executable_command + parameter values (after the
    preprocessing commands), with the MELISSA_* variables the client reads."""
    config = loaded.config
    cfg = config.client_config
    params = [repr(float(v)) for v in parameters]
    command = shlex.split(cfg.executable_command) + params
    if cfg.preprocessing_commands:
        script = " && ".join([*cfg.preprocessing_commands, "exec " + shlex.join(command)])
        command = ["/bin/sh", "-c", script]
    env = job_environment(**cfg.environment)
    env.update(
        MELISSA_SERVER=server_address,
        MELISSA_SIMULATION_ID=str(simulation_id),
        MELISSA_STUDY_TOKEN=token_hex,
        MELISSA_ATTEMPT=str(attempt),
        MELISSA_PARAMETERS=json.dumps(dict(zip(names, parameters))),
    )
    if server_key is not None:
        env["MELISSA_SERVER_KEY"] = server_key
    return JobSpec(
        name=f"simulation_{simulation_id:06d}",
        argv=command,
        env=env,
        cwd=loaded.base_dir,
        log_path=log_path,
        ranks=cfg.ranks,
        scheduler_args=tuple(config.launcher_config.scheduler_arg_client),
    )
