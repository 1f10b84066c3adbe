"""`melissa-server OUTPUT_DIR`: the server job the launcher starts (users rarely call it)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from melissa.config import StudyConfig, parse_config
from melissa.errors import MelissaError
from melissa.paths import StudyPaths
from melissa.protocol import token_from_hex
from melissa.server.select import server_class


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="melissa-server",
        description="Run a Melissa server for the study in OUTPUT_DIR (started by melissa-launcher;"
        " reads OUTPUT_DIR/study.json and the token from MELISSA_STUDY_TOKEN).",
    )
    parser.add_argument("output_dir", help="the study's output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        # Several ranks share one log file: each line says which rank wrote it.
        format=f"%(asctime)s %(levelname)s %(name)s[{_launcher_rank()}]: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(StudyPaths(Path(args.output_dir).resolve()))
    except MelissaError as exc:
        print(f"melissa-server: error: {exc}", file=sys.stderr)
        return 2


def _launcher_rank() -> str:
    """This process's MPI rank as the MPI launcher tells it (before MPI is initialised)."""
    for key in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if key in os.environ:
            return os.environ[key]
    return "0"


def _run(paths: StudyPaths) -> int:
    try:
        text = paths.study_file.read_text()
    except OSError as exc:
        raise MelissaError(f"cannot read the study file {paths.study_file}: {exc}") from None
    config = parse_config(text, str(paths.study_file))
    logging.getLogger().setLevel(config.launcher_config.log_level)
    token_hex = os.environ.get("MELISSA_STUDY_TOKEN", "")
    if not token_hex:
        raise MelissaError("MELISSA_STUDY_TOKEN is not set (the launcher sets it)")
    # MPI first: under srun's PMI2, initialising it after importing xarray (or torch) broke
    # the PMI exchange of ranks on different nodes.
    comm = _communicator(config)
    server_type = server_class(config)  # SA, deep learning, or the user's own
    server = server_type(config, paths, token_from_hex(token_hex), comm)
    server.restore_checkpoint()
    if server.checkpointing:
        signal.signal(signal.SIGTERM, lambda signum, frame: server.stop("SIGTERM"))
    server.run()
    if server.stop_reason is not None:
        # Non-zero: the launcher must see that the server stopped before the study ended.
        print(f"melissa-server: stopped by {server.stop_reason}; restart it to continue from "
              f"its checkpoint in {paths.checkpoints}", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0


def _communicator(config: StudyConfig) -> Any:
    """MPI_COMM_WORLD when the server runs on several ranks (mpi4py only imported then)."""
    ranks = config.server_config.ranks
    if ranks == 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MelissaError(
            f"server_config.ranks is {ranks} but mpi4py is not installed ({exc}): "
            "pip install mpi4py (and an MPI, e.g. the mpich wheel)"
        ) from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != ranks:
        raise MelissaError(
            f"started on {comm.Get_size()} MPI processes but server_config.ranks is {ranks}"
        )
    return comm


if __name__ == "__main__":
    sys.exit(main())
