"""The config.json schema: one pydantic model per section (names follow Melissa's where it has one).

Every field's `description` is what `melissa-launcher --print-options` shows, so keep them
user-facing. Unknown keys are errors (`extra="forbid"`): a misspelt key must never be ignored.
Types are strict: "6", "yes" or "1e-4" in quotes are strings, never silently taken for a number or
a boolean (an integer is still a valid float).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# Columns parameters.csv has besides the parameters themselves.
RESERVED_PARAMETER_NAMES = frozenset(
    {"simulation_id", "sobol_group", "sobol_member", "status", "attempts", "exit_code", "message"}
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StudyOptions(Section):
    field_names: list[Annotated[str, Field(pattern=_NAME)]] = Field(
        min_length=1, description="Names of the fields every simulation sends (melissa.init)."
    )
    nb_time_steps: int = Field(gt=0, description="Time steps each simulation sends per field.")
    parameter_sweep_size: int = Field(
        gt=0,
        description="Number of simulations in the study; with sa_config.sobol_indices, number "
        "of pick-freeze groups of p + 2 simulations each (p: number of parameters).",
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of the design of experiments (same seed, same draws)."
    )
    simulation_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a simulation may go without any of its data reaching the server "
        "(counted from its job's start) before it is cancelled as hung.",
    )
    crashes_before_redraw: int = Field(
        default=2,
        ge=0,
        description="Times a failed simulation is resubmitted with the same parameters; at its "
        "next failure its parameters are redrawn (for Sobol' indices, its whole group) under a "
        "new simulation id (needs launcher_config.fault_tolerance).",
    )

    field_shapes: dict[str, list[Annotated[int, Field(gt=0)]]] = Field(
        default_factory=dict,
        description='Shape of fields whose simulations declare none (Melissa\'s API cannot), '
        'C order, slowest dimension first, e.g. {"heat1": [100, 100]}: their results get '
        "spatial dimensions and their plots maps. The product must be the field's size.",
    )

    @field_validator("field_names")
    @classmethod
    def _unique_fields(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError(f"field names must be unique, got {names}")
        return names

    @model_validator(mode="after")
    def _shaped_fields(self) -> StudyOptions:
        unknown = sorted(set(self.field_shapes) - set(self.field_names))
        if unknown:
            raise ValueError(f"field_shapes names {unknown}, which are not in field_names")
        if any(not shape for shape in self.field_shapes.values()):
            raise ValueError("field_shapes: a shape lists at least one dimension")
        return self


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


class BreedOptions(Section):
    """Active sampling (sampling.method "breed"; docs/deep-learning.md#active-sampling-breed)."""

    generation_size: int = Field(
        default=10, gt=0,
        description="Simulations per generation; generation 0 is a Halton set, each later "
        "one is bred once the earlier ones finished and their fitness is known.",
    )
    exploration_start: float = Field(
        default=0.5, ge=0, le=1,
        description="Fraction of fresh (space-filling) draws in generation 1.",
    )
    exploration_end: float = Field(
        default=0.1, ge=0, le=1,
        description="Fraction of fresh draws in the last generation (linear between).",
    )
    mutation_scale: float = Field(
        default=0.5, gt=0,
        description="Mutation covariance: this factor squared times the fitness-weighted "
        "covariance of the simulations so far (in the unit cube of the CDFs).",
    )
    min_mutation: float = Field(
        default=0.01, gt=0,
        description="Smallest standard deviation of a mutation in any direction (unit cube).",
    )
    candidates: int = Field(
        default=30, gt=0,
        description="A fresh draw is the farthest from every simulation so far of this many "
        "uniform draws (1: plain uniform draws).",
    )
    retries: int = Field(
        default=5, ge=0,
        description="An out-of-bounds child is tried again this many times, each with the "
        "mutation step halved; then it takes its parent's parameters.",
    )
    fitness_timeout: float = Field(
        default=60.0, gt=0,
        description="Seconds a generation waits for the fitness of the earlier ones; then it is "
        "bred from the fitness known.",
    )


class Sampling(Section):
    method: Literal["random", "lhs", "sobol", "halton", "breed"] = Field(
        default="random",
        description="Design of experiments: random, lhs, sobol, halton, or breed (active "
        "sampling of a dl_config study: new simulations are bred where the surrogate is worst).",
    )
    scramble: bool = Field(
        default=True, description="Scramble the Sobol'/Halton sequence (seeded)."
    )
    breed: BreedOptions = Field(
        default_factory=BreedOptions, description="Options of the breed method."
    )


class StopWhen(Section):
    figure: str = Field(
        description="Convergence figure to watch: mean_stderr (the mean's root-mean-square "
        "standard error relative to the field's total standard deviation; needs variance) or "
        "sobol_interval (the widest 95% interval of the aggregated Sobol' indices; needs "
        "sobol_indices), see docs/statistics.md.",
    )
    below: float = Field(gt=0, description="Stop once the figure is below this for every field.")
    min_simulations: int = Field(
        default=10, ge=2,
        description="Simulations the statistics must hold (in a Sobol' study its A and B "
        "members) before the figure may stop the study.",
    )

    @field_validator("figure")
    @classmethod
    def _known(cls, name: str) -> str:
        from melissa.server.sa.figures import FIGURES  # the figures' own module: numpy only

        if name not in FIGURES:
            raise ValueError(f"unknown figure {name!r}: choose one of {sorted(FIGURES)}")
        return name


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
    quantiles: list[float] = Field(
        default_factory=list,
        description="Quantile levels in (0, 1) to estimate per cell, e.g. [0.05, 0.5, 0.95]: "
        "exact (np.quantile, 'linear') up to quantile_exact_samples samples, then by "
        "density-scaled Robbins-Monro, always within the cell's [min, max].",
    )
    quantile_exact_samples: int | Literal["auto"] = Field(
        default="auto",
        description='K: samples per cell and time step kept to give exact quantiles (8 bytes '
        'each; the estimates reuse the memory beyond), an integer in [0, 10000], or "auto" '
        "(default): the samples each cell will receive in this study (parameter_sweep_size, "
        "twice that with sobol_indices), at most 10000 and as many as fit in "
        "quantile_memory_mb.",
    )
    quantile_memory_mb: float = Field(
        default=1024.0, gt=0,
        description='Memory per server rank for the quantile state when quantile_exact_samples '
        'is "auto", shared equally by the fields: K is capped so that each field\'s blocks '
        "(8 bytes x K x its cells on the rank x time steps) fit in its share.",
    )
    sobol_indices: bool = Field(
        default=False,
        description="First-order and total Sobol' indices of every parameter with 95% "
        "intervals (Martinez, pick-freeze): the study runs parameter_sweep_size groups of p + 2 "
        "simulations. The other statistics then use the groups' A and B members.",
    )
    hold_memory_mb: float = Field(
        default=2048, ge=0,
        description="Per server rank, MiB of running simulations' data held apart "
        "until they complete, so that an abandoned one leaves nothing in the results. Beyond it, "
        "the simulations holding the most are committed early; if one is abandoned after all, "
        "its data stays and the results flag it (abandoned_samples). 0: commit on arrival.",
    )
    second_order: bool = Field(
        default=False,
        description="Also second-order Sobol' indices of every pair of parameters, with 95% "
        "intervals (Saltelli 2002's extended pick-freeze): each group holds 2p + 2 simulations "
        "(A, B, C_k and D_k). Needs sobol_indices.",
    )
    plot_time_steps: list[int] | None = Field(
        default=None,
        description="Time steps to plot (default: first, middle and last). Empty list: no plots.",
    )
    plot_cells: list[int] | None = Field(
        default=None,
        description="Flat cell indices (C order) whose statistics and Sobol' indices are plotted "
        "over time (default: the middle cell and the cell of largest variance).",
    )
    checkpoint_interval: float | None = Field(
        default=None,
        ge=0,
        description="Seconds between two checkpoints of the server's state (statistics and what "
        "was received) in output_dir/checkpoints; 0: only when the server is stopped (SIGTERM). "
        "Default (null): adaptive, 30 s or 20 times what the last one took if longer, so that "
        "checkpoints take at most 5% of the study's time.",
    )
    keep_checkpoints: bool = Field(
        default=False,
        description="Keep the server's checkpoints once the results are written (by default a "
        "finished study removes them).",
    )
    output_format: Literal["auto", "zarr", "netcdf"] = Field(
        default="auto",
        description="Results per field: zarr (statistics/<field>.zarr, written by every server "
        "rank in parallel), netcdf (statistics/<field>.nc, one file gathered on rank 0: small "
        "studies), auto: netcdf up to 256 MiB of results per field and without compression, "
        "else zarr.",
    )
    output_dtype: Literal["float64", "float32"] = Field(
        default="float64",
        description="Type of the floating-point results in the files (the state stays float64); "
        "counts and simulation ids stay integers.",
    )
    stop_when: StopWhen | None = Field(
        default=None,
        description='Stop submitting simulations once a convergence figure is below a target, '
        'e.g. {"figure": "mean_stderr", "below": 0.02, "min_simulations": 20}: the running ones '
        "finish, and the study ends with their results.",
    )
    output_compression: Literal["none", "zstd", "lz4"] = Field(
        default="none",
        description="Compress the Zarr results (Blosc with byte shuffle): zstd is smaller, lz4 "
        "faster. Needs Zarr output.",
    )

    @field_validator("quantile_exact_samples", mode="before")
    @classmethod
    def _exact_samples(cls, value: object) -> object:
        """One clear line rather than one per member of the union."""
        if value == "auto" or (type(value) is int and 0 <= value <= 10_000):
            return value
        raise ValueError(f'must be an integer in [0, 10000] or "auto", got {json.dumps(value)}')

    @model_validator(mode="after")
    def _thresholds(self) -> SAConfig:
        if self.output_compression != "none" and self.output_format == "netcdf":
            raise ValueError("output_compression needs Zarr output: set output_format to zarr "
                             "or auto")
        if self.stop_when is not None:
            from melissa.server.sa.figures import FIGURES

            needs = FIGURES[self.stop_when.figure].requires
            if not getattr(self, needs):
                raise ValueError(f"stop_when figure {self.stop_when.figure!r} needs {needs}: set "
                                 f"sa_config.{needs} to true")
        if self.threshold_exceedance and not self.threshold_values:
            raise ValueError("threshold_exceedance is true but threshold_values is empty")
        if any(not math.isfinite(t) for t in self.threshold_values):
            raise ValueError("threshold_values must be finite numbers")
        if any(not 0.0 < q < 1.0 for q in self.quantiles):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {self.quantiles}")
        if len(set(self.quantiles)) != len(self.quantiles):
            raise ValueError(f"quantiles must be unique, got {self.quantiles}")
        if self.second_order and not self.sobol_indices:
            raise ValueError("second_order needs sobol_indices: true")
        if any(c < 0 for c in self.plot_cells or []):
            raise ValueError(f"plot_cells are cell indices (>= 0), got {self.plot_cells}")
        if not (self.mean or self.variance or self.skewness or self.kurtosis or self.min
                or self.max or self.threshold_exceedance or self.quantiles
                or self.sobol_indices):
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


class DLConfig(Section):
    """Online training of a deep surrogate (docs/deep-learning.md)."""

    batch_size: int = Field(default=32, gt=0, description="Samples per training batch.")
    framework: Literal["torch", "tensorflow"] = Field(
        default="torch",
        description="torch (PyTorch, DeepLearningServer) or tensorflow (Keras 3 on TensorFlow, "
        "TensorFlowServer; one server rank, CPU).",
    )
    buffer: Literal["fifo", "firo", "reservoir", "batch_reservoir", "sim_paired_reservoir"] = (
        Field(
            default="reservoir",
            description="Training buffer: fifo (oldest first, each sample used once), firo "
            "(random out, each used once), reservoir (random, samples reused until evicted), "
            "batch_reservoir (unused samples first, then random reused ones) or "
            "sim_paired_reservoir (random pairs of consecutive time steps of one simulation).",
        )
    )
    buffer_size: int = Field(
        default=10000, gt=0, description="Samples the buffer holds (per server rank)."
    )
    per_server_watermark: int = Field(
        default=1000, gt=0,
        description="firo and the reservoirs: samples the buffer must hold before a batch is "
        "drawn while data still arrives.",
    )
    drain_batches: int | None = Field(
        default=None, ge=0,
        description="the reservoirs: batches trained after the last simulation ended; null: "
        "until every sample (pair) in the buffer was used at least once.",
    )
    batches_per_sample: float | None = Field(
        default=None, gt=0,
        description="While simulations still send: at most this many batches per sample the "
        "server rank received so far (training waits for data beyond), so the training a study "
        "gets depends on its data, not on how long its simulations took; null: as many batches "
        "as the time allows.",
    )
    nb_batches_update: int = Field(
        default=100, gt=0,
        description="Batches between two validations (and lines of metrics and TensorBoard).",
    )
    checkpoint_interval: int = Field(
        default=1000, ge=0,
        description="Batches between two checkpoints of model and optimizer (0: only at the end).",
    )
    learning_rate: float = Field(default=1e-3, gt=0, description="Learning rate of the optimizer.")
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1,
        description="Fraction of the simulations held out for validation (evenly spread ids).",
    )
    hidden_layers: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [256, 256],
        description="Widths of the hidden layers of the default model (an MLP).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where to train: cuda if available (auto), cpu or cuda."
    )
    cpu_threads: int | None = Field(
        default=None, gt=0,
        description="Threads torch computes with on the CPU (null: torch's default, one per "
        "core); 1 is fastest for small models on cores shared with the simulations.",
    )

    def validation_simulations(self, sweep_size: int) -> frozenset[int]:
        """Simulation ids held out for validation: round(validation_fraction * sweep_size) of
        them (at least one if the fraction is not 0), evenly spread over the ids."""
        count = round(self.validation_fraction * sweep_size)
        if self.validation_fraction > 0:
            count = max(1, count)
        return frozenset((2 * i + 1) * sweep_size // (2 * count) for i in range(count))

    @model_validator(mode="after")
    def _sizes(self) -> DLConfig:
        if self.per_server_watermark > self.buffer_size:
            raise ValueError(
                f"per_server_watermark ({self.per_server_watermark}) exceeds buffer_size "
                f"({self.buffer_size}): training would never start"
            )
        if self.batch_size > self.buffer_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) exceeds buffer_size ({self.buffer_size})"
            )
        return self


class ClientConfig(Section):
    executable_command: str = Field(
        min_length=1,
        description="Command of one simulation; the parameter values are appended as arguments. "
        "Run in the config file's directory.",
    )
    ranks: int = Field(
        default=1, ge=1,
        description="MPI ranks per simulation; more than 1 starts it through MPI (mpiexec -n).",
    )
    preprocessing_commands: list[str] = Field(
        default_factory=list, description="Shell commands run before each simulation, in its job."
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for every simulation."
    )


class ServerConfig(Section):
    ranks: int = Field(
        default=1, ge=1,
        description="MPI ranks of the server; each owns a contiguous cell range of every field.",
    )
    bind_address: str = Field(
        default="127.0.0.1",
        description="Address the server listens on (an IP address or host name it can bind); "
        "0.0.0.0 (every interface) for clients on other nodes: see interface.",
    )
    interface: str | None = Field(
        default=None, min_length=1, max_length=15,
        description='Network interface (e.g. "ib0") whose address the server advertises to the '
        "clients and listens on (on every interface when bind_address is 0.0.0.0). Without it, "
        "a server bound to 0.0.0.0 advertises the address of its interface that routes to the "
        "launcher's host.",
    )
    port: int = Field(default=0, ge=0, le=65535, description="Port of rank 0; 0 picks a free one.")
    max_message_bytes: int = Field(
        default=1 << 30, gt=0, description="Largest message accepted; larger ones drop the peer."
    )
    encryption: bool = Field(
        default=False,
        description="Encrypt and authenticate all traffic with ZeroMQ CURVE (keys made per run; "
        "clients get the server's key in MELISSA_SERVER_KEY). Use it off a trusted network.",
    )
    server_filename: str | None = Field(
        default=None, min_length=1,
        description="Python file of a custom server class (relative paths: from the config file).",
    )
    server_class: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the server class in server_filename (a melissa Server subclass).",
    )

    @model_validator(mode="after")
    def _custom_server(self) -> ServerConfig:
        if (self.server_filename is None) != (self.server_class is None):
            raise ValueError("server_filename and server_class go together: give both or neither")
        return self


def _one_line(arg: str) -> str:
    if "\n" in arg or "\r" in arg:
        raise ValueError(f"a scheduler argument is one line, got {arg!r}")
    return arg


_SchedulerArg = Annotated[str, Field(min_length=1), AfterValidator(_one_line)]


class LauncherConfig(Section):
    scheduler: str = Field(
        default="local",
        description="How jobs run: local (processes on this machine; jobs of several ranks "
        "through the mpiexec first on PATH), openmpi (the same, through the system's OpenMPI "
        "mpirun), slurm or oar (batch jobs), slurm-steps (job steps inside the Slurm allocation "
        "the launcher runs in), or a backend a plugin package adds (see docs/schedulers.md).",
    )
    scheduler_arg_client: list[_SchedulerArg] = Field(
        default_factory=list,
        description="Options for every simulation's batch job, verbatim: #SBATCH lines under "
        'Slurm (e.g. ["--time=0:30:00", "--partition=short"]), oarsub arguments under OAR. '
        "Ignored by the local scheduler.",
    )
    scheduler_arg_server: list[_SchedulerArg] = Field(
        default_factory=list,
        description="Options for the server's batch job, verbatim (as scheduler_arg_client).",
    )
    mpi_launcher_args: list[_SchedulerArg] = Field(
        default_factory=list,
        description="Extra options of the command that starts a job of several ranks: "
        'srun under Slurm (e.g. ["--mpi=pmi2"] for the pip MPICH wheel), mpirun under OAR and '
        "openmpi, mpiexec under local.",
    )
    http_port: int = Field(
        default=0, ge=0, le=65535,
        description="Port of the launcher's status API (what melissa-monitor reads); 0 picks a "
        "free one. The address goes to output_dir/launcher.json.",
    )
    http_bind: str = Field(
        default="127.0.0.1", min_length=1,
        description="Interface the status API listens on (token-protected; 0.0.0.0: all).",
    )
    job_limit: int = Field(default=4, ge=1, description="Most simulations running at once.")
    server_timeout: float = Field(
        default=60.0, gt=0,
        description="Seconds to wait for the server to start or answer; a running server silent "
        "this long is restarted (see max_restarts).",
    )
    launcher_timeout: float = Field(
        default=120.0, gt=0,
        description="Seconds the server runs on without hearing from the launcher (it sends a "
        "heartbeat every second) before it checkpoints and exits: a killed launcher leaves no "
        "server behind; --resume continues the study.",
    )
    fault_tolerance: bool = Field(
        default=True,
        description="Resubmit failed or hung simulations (see study_options."
        "crashes_before_redraw); false: a failed simulation stays failed.",
    )
    fail_fast: int = Field(
        default=3, ge=0,
        description="Stop the study when this many simulations failed the same way (same "
        "reason, same last line of output) before any simulation completed: a broken command "
        "or a missing melissa.finalize(), not worth retrying for the whole ensemble. 0: never.",
    )
    max_restarts: int = Field(
        default=3, ge=0,
        description="Times a dead or silent server is restarted from its latest checkpoint "
        "before the study fails.",
    )
    poll_interval: float = Field(
        default=0.2, gt=0, description="Seconds between two scheduler polls."
    )
    verbosity: int = Field(
        default=2, ge=0, le=3,
        description="What logs/launcher.log and logs/server.log hold (Melissa's levels): 0 "
        "errors, 1 and warnings, 2 and progress, 3 and debugging details.",
    )

    @property
    def log_level(self) -> int:
        """The logging level of `verbosity`."""
        return (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)[self.verbosity]

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, name: str) -> str:
        # Imported here: the registry builds schedulers from this very model.
        from melissa.launcher.schedulers.registry import backends

        known = backends()
        if name not in known:
            raise ValueError(f"Input should be one of {', '.join(sorted(known))} (or a plugin's "
                             "scheduler: see docs/schedulers.md)")
        return name


class StudyConfig(Section):
    output_dir: Annotated[Path, Field(strict=False)] = Field(  # JSON has no path type
        default=Path("melissa_output"),
        description="Where results, logs and state go; relative paths are from the config file.",
    )
    study_options: StudyOptions
    parameters: list[Parameter] = Field(min_length=1, description="The uncertain parameters.")
    sampling: Sampling = Field(default_factory=Sampling)
    sa_config: SAConfig | None = Field(
        default=None,
        description="Sensitivity analysis (statistics); the default, with mean and variance, "
        "when dl_config is absent too.",
    )
    dl_config: DLConfig | None = Field(
        default=None, description="Deep-surrogate training instead of statistics."
    )
    client_config: ClientConfig
    server_config: ServerConfig = Field(default_factory=ServerConfig)
    launcher_config: LauncherConfig = Field(default_factory=LauncherConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_analysis(cls, data: object) -> object:
        """A study without sa_config or dl_config is a sensitivity analysis with defaults."""
        if isinstance(data, dict) and data.get("sa_config") is None and data.get(
            "dl_config"
        ) is None:
            return {**data, "sa_config": {}}
        return data

    @model_validator(mode="after")
    def _one_analysis(self) -> StudyConfig:
        if self.sa_config is not None and self.dl_config is not None:
            raise ValueError(
                "sa_config and dl_config are both given: a study either computes statistics "
                "(sa_config) or trains a surrogate (dl_config)"
            )
        if self.sampling.method == "breed":
            if self.dl_config is None:
                raise ValueError(
                    'sampling.method "breed" needs dl_config: the surrogate\'s loss on each '
                    "simulation is the fitness that guides the sampling"
                )
            if self.dl_config.buffer == "sim_paired_reservoir":
                raise ValueError('sampling.method "breed" does not work with dl_config.buffer '
                                 '"sim_paired_reservoir" (its fitness is per sample)')
        if self.dl_config is not None:
            size = self.study_options.parameter_sweep_size
            held_out = len(self.dl_config.validation_simulations(size))
            if held_out >= size:
                raise ValueError(
                    f"dl_config.validation_fraction {self.dl_config.validation_fraction} holds "
                    f"out {held_out} of the {size} simulations: none is left to train on"
                )
        return self

    @property
    def group_size(self) -> int:
        """Simulations per group: p + 2 (A, B, C_1..C_p) for Sobol' indices, 2p + 2 (and
        D_1..D_p) with second-order ones, else 1."""
        if self.sa_config is not None and self.sa_config.sobol_indices:
            p = len(self.parameters)
            return (2 * p if self.sa_config.second_order else p) + 2
        return 1

    @property
    def nb_simulations(self) -> int:
        """Simulations the study runs at first (before any redraw)."""
        return self.study_options.parameter_sweep_size * self.group_size

    @property
    def sa(self) -> SAConfig:
        """sa_config of a sensitivity-analysis study."""
        if self.sa_config is None:
            raise ValueError("this study trains a surrogate (dl_config): it has no sa_config")
        return self.sa_config

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
