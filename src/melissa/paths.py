"""Every file name of a study's output directory, in one place."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    @property
    def state_db(self) -> Path:
        """The launcher's SQLite state."""
        return self.root / "study.db"

    @property
    def study_file(self) -> Path:
        """The validated config as the server reads it (JSON, no secrets)."""
        return self.root / "study.json"

    @property
    def rendezvous(self) -> Path:
        """Written by server rank 0 once bound: {"address": "tcp://host:port", "pid": ...}."""
        return self.root / "server.json"

    @property
    def parameters_csv(self) -> Path:
        return self.root / "parameters.csv"

    @property
    def launcher_info(self) -> Path:
        """Written by the launcher while it runs: {"address": "http://host:port", "pid": ...},
        where melissa-monitor finds the status API (the token is in study.db)."""
        return self.root / "launcher.json"

    @property
    def lock(self) -> Path:
        """Held by the study's live launcher: its host, pid and start time (launcher/lock.py)."""
        return self.root / "launcher.lock"

    @property
    def job_limit(self) -> Path:
        """Holds job_limit while the study runs; edit it to change the limit (elasticity)."""
        return self.root / "job_limit"

    @property
    def jobs(self) -> Path:
        """Batch scripts of the Slurm and OAR jobs (<job name>.sh)."""
        return self.root / "jobs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def launcher_log(self) -> Path:
        return self.logs / "launcher.log"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    def simulation_log(self, simulation_id: int) -> Path:
        return self.logs / f"simulation_{simulation_id:06d}.log"

    @property
    def statistics(self) -> Path:
        return self.root / "statistics"

    def field_results(self, field: str, zarr: bool = False) -> Path:
        """A field's results: a NetCDF file, or a Zarr store (a directory)."""
        return self.statistics / f"{field}.{'zarr' if zarr else 'nc'}"

    @property
    def sobol_convergence(self) -> Path:
        """Sobol' studies: the aggregated indices of each field and their widest 95% interval
        over time, one row per field every few seconds (plotted as plots/sobol_convergence.png)."""
        return self.statistics / "sobol_convergence.csv"

    @property
    def stop_when(self) -> Path:
        """sa_config.stop_when: its figure over time, a row every few seconds."""
        return self.statistics / "stop_when.csv"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def checkpoints(self) -> Path:
        """Checkpoints: of the statistics server's ranks, or of a deep-learning model."""
        return self.root / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        """Deep learning: the latest checkpoint of model, optimizer and counters."""
        return self.checkpoints / "last.pt"

    def server_checkpoint(self, rank: int, sequence: int) -> Path:
        """Checkpoint number `sequence` of server rank `rank` (server/checkpoint.py)."""
        return self.checkpoints / f"server-rank{rank:04d}-{sequence:09d}.ckpt"

    def server_checkpoints(self, rank: int) -> list[Path]:
        """Server rank `rank`'s checkpoint files, newest (highest sequence) first."""
        return sorted(self.checkpoints.glob(f"server-rank{rank:04d}-*.ckpt"), reverse=True)

    @property
    def tensorboard(self) -> Path:
        """Deep learning: TensorBoard event files (tensorboard --logdir this)."""
        return self.root / "tensorboard"

    @property
    def training_metrics(self) -> Path:
        """Deep learning: one CSV row per nb_batches_update batches."""
        return self.root / "metrics.csv"

    def remove_study(self) -> None:
        """Delete what a study wrote here (and nothing else a user may keep in the directory)."""
        for directory in (self.logs, self.statistics, self.plots, self.jobs, self.checkpoints,
                          self.tensorboard):
            shutil.rmtree(directory, ignore_errors=True)
        for db in self.root.glob(self.state_db.name + "*"):  # with SQLite's -wal and -shm files
            db.unlink()
        for path in (self.study_file, self.rendezvous, self.parameters_csv, self.launcher_info,
                     self.training_metrics, self.job_limit):
            path.unlink(missing_ok=True)

    def make_dirs(self) -> None:
        """What every study needs at once; statistics/ and plots/ come with their first file."""
        for d in (self.root, self.logs):
            d.mkdir(parents=True, exist_ok=True)
