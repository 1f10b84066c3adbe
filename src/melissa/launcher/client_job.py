"""How one simulation attempt is started: its command, environment and log (a study's jobs and
--try-one's). The command is split and the environment copied once per study, not per job."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from melissa.config import LoadedConfig
from melissa.launcher.schedulers.base import JobSpec
from melissa.launcher.server_job import job_environment


class ClientJobs:
    def __init__(self, loaded: LoadedConfig, parameter_names: Sequence[str]) -> None:
        self.loaded = loaded
        self.parameter_names = list(parameter_names)
        cfg = loaded.config.client_config
        self._command = shlex.split(cfg.executable_command)
        self._env = job_environment(**cfg.environment)

    def spec(self, simulation_id: int, attempt: int, parameters: Sequence[float],
             server_address: str, token_hex: str, server_key: str | None,
             log_path: Path) -> JobSpec:
        """The job of one attempt: executable_command + the parameter values (after the
        preprocessing commands), with the MELISSA_* variables the client reads."""
        config = self.loaded.config
        cfg = config.client_config
        command = self._command + [repr(float(v)) for v in parameters]
        if cfg.preprocessing_commands:
            script = " && ".join([*cfg.preprocessing_commands, "exec " + shlex.join(command)])
            command = ["/bin/sh", "-c", script]
        env = dict(self._env)
        env.update(
            MELISSA_SERVER=server_address,
            MELISSA_SIMULATION_ID=str(simulation_id),
            MELISSA_STUDY_TOKEN=token_hex,
            MELISSA_ATTEMPT=str(attempt),
            MELISSA_PARAMETERS=json.dumps(dict(zip(self.parameter_names, parameters))),
            # Melissa's Fortran API matches its names (no NUL needed) against these.
            MELISSA_FIELD_NAMES=",".join(config.study_options.field_names),
        )
        if server_key is not None:
            env["MELISSA_SERVER_KEY"] = server_key
        return JobSpec(
            name=f"simulation_{simulation_id:06d}",
            argv=command,
            env=env,
            cwd=self.loaded.base_dir,
            log_path=log_path,
            ranks=cfg.ranks,
            scheduler_args=tuple(config.launcher_config.scheduler_arg_client),
        )
