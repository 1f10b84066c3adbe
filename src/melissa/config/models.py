"""The config.json schema: one pydantic model per section (names follow Melissa's where it has one).

Every field's `description` is what `melissa-launcher --print-options` shows, so keep them
user-facing. Unknown keys are errors (`extra="forbid"`): a misspelt key must never be ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# Columns parameters.csv has besides the parameters themselves.
RESERVED_PARAMETER_NAMES = frozenset({"simulation_id", "status", "attempts", "exit_code", "message"})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudyOptions(Section):
    field_names: list[Annotated[str, Field(pattern=_NAME)]] = Field(
        min_length=1, description="Names of the fields every simulation sends (melissa.init)."
    )
    nb_time_steps: int = Field(gt=0, description="Time steps each simulation sends per field.")
    parameter_sweep_size: int = Field(gt=0, description="Number of simulations in the study.")
    seed: int = Field(
        default=0, ge=0, description="Seed of the design of experiments (same seed, same draws)."
    )
    simulation_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a simulation may run before the launcher cancels it as hung.",
    )

    @field_validator("field_names")
    @classmethod
    def _unique_fields(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError(f"field names must be unique, got {names}")
        return names


class UniformParameter(Section):
    name: str = Field(pattern=_NAME, description="Parameter name (a column of parameters.csv).")
    distribution: Literal["uniform"] = Field(description="Uniform on [low, high].")
    low: float = Field(description="Lower bound.")
    high: float = Field(description="Upper bound (> low).")

    @model_validator(mode="after")
    def _bounds(self) -> UniformParameter:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        return self


class LogUniformParameter(UniformParameter):
    distribution: Literal["loguniform"] = Field(  # type: ignore[assignment]
        description="Log-uniform on [low, high] (uniform in log space; 0 < low)."
    )

    @model_validator(mode="after")
    def _positive(self) -> LogUniformParameter:
        if self.low <= 0:
            raise ValueError(f"log-uniform bounds must be positive, got low={self.low}")
        return self


class NormalParameter(Section):
    name: str = Field(pattern=_NAME, description="Parameter name (a column of parameters.csv).")
    distribution: Literal["normal"] = Field(description="Normal with mean and std.")
    mean: float = Field(description="Mean of the normal distribution.")
    std: float = Field(gt=0, description="Standard deviation (> 0).")


Parameter = Annotated[
    UniformParameter | LogUniformParameter | NormalParameter, Field(discriminator="distribution")
]


class Sampling(Section):
    method: Literal["random", "lhs", "sobol", "halton"] = Field(
        default="random", description="Design of experiments: random, lhs, sobol or halton."
    )
    scramble: bool = Field(
        default=True, description="Scramble the Sobol'/Halton sequence (seeded)."
    )


class SAConfig(Section):
    mean: bool = Field(default=True, description="Compute the mean.")
    variance: bool = Field(default=True, description="Compute the unbiased variance (ddof=1).")
    skewness: bool = Field(default=False, description="Compute the skewness (biased, SciPy).")
    kurtosis: bool = Field(default=False, description="Compute the excess kurtosis (biased).")
    min: bool = Field(default=False, description="Compute the minimum and its simulation id.")
    max: bool = Field(default=False, description="Compute the maximum and its simulation id.")
    threshold_exceedance: bool = Field(
        default=False, description="Count samples strictly above each of threshold_values."
    )
    threshold_values: list[float] = Field(
        default_factory=list, description="Thresholds for threshold_exceedance."
    )
    plot_time_steps: list[int] | None = Field(
        default=None,
        description="Time steps to plot (default: first, middle and last). Empty list: no plots.",
    )

    @model_validator(mode="after")
    def _thresholds(self) -> SAConfig:
        if self.threshold_exceedance and not self.threshold_values:
            raise ValueError("threshold_exceedance is true but threshold_values is empty")
        if any(not math.isfinite(t) for t in self.threshold_values):
            raise ValueError("threshold_values must be finite numbers")
        if not (self.mean or self.variance or self.skewness or self.kurtosis or self.min
                or self.max or self.threshold_exceedance):
            raise ValueError("no statistic selected: set at least one of mean, variance, ...")
        return self

    @property
    def moment_order(self) -> int:
        """Highest central moment the selection needs (0: none)."""
        if self.kurtosis:
            return 4
        if self.skewness:
            return 3
        if self.variance:
            return 2
        return 1 if self.mean else 0


class ClientConfig(Section):
    executable_command: str = Field(
        min_length=1,
        description="Command of one simulation; the parameter values are appended as arguments. "
        "Run in the config file's directory.",
    )
    ranks: int = Field(default=1, ge=1, le=1, description="MPI ranks per simulation (1 for now).")
    preprocessing_commands: list[str] = Field(
        default_factory=list, description="Shell commands run before each simulation, in its job."
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for every simulation."
    )


class ServerConfig(Section):
    ranks: int = Field(default=1, ge=1, le=1, description="MPI ranks of the server (1 for now).")
    bind_address: str = Field(
        default="127.0.0.1",
        description="Interface the server listens on (an IP address or host name it can bind).",
    )
    port: int = Field(default=0, ge=0, le=65535, description="Port of rank 0; 0 picks a free one.")
    max_message_bytes: int = Field(
        default=1 << 30, gt=0, description="Largest message accepted; larger ones drop the peer."
    )


class LauncherConfig(Section):
    scheduler: Literal["local"] = Field(
        default="local", description="How jobs run: local (processes on this machine)."
    )
    job_limit: int = Field(default=4, ge=1, description="Most simulations running at once.")
    server_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for the server to start or answer."
    )
    poll_interval: float = Field(
        default=0.2, gt=0, description="Seconds between two scheduler polls."
    )


class StudyConfig(Section):
    output_dir: Path = Field(
        default=Path("melissa_output"),
        description="Where results, logs and state go; relative paths are from the config file.",
    )
    study_options: StudyOptions
    parameters: list[Parameter] = Field(min_length=1, description="The uncertain parameters.")
    sampling: Sampling = Field(default_factory=Sampling)
    sa_config: SAConfig = Field(default_factory=SAConfig)
    client_config: ClientConfig
    server_config: ServerConfig = Field(default_factory=ServerConfig)
    launcher_config: LauncherConfig = Field(default_factory=LauncherConfig)

    @field_validator("parameters")
    @classmethod
    def _unique_parameters(cls, params: list[Parameter]) -> list[Parameter]:
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"parameter names must be unique, got {names}")
        clash = sorted(set(names) & RESERVED_PARAMETER_NAMES)
        if clash:
            raise ValueError(f"parameter names {clash} are reserved (columns of parameters.csv)")
        return params
