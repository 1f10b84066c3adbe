"""`melissa-launcher -c config.json`: run a whole study and exit 0 when it completed;
`melissa-launcher --resume` (with -c config.json or the output directory) continues one."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from melissa.config import LoadedConfig, load_config, parse_config
from melissa.config.options import print_options
from melissa.errors import MelissaError, StudyError
from melissa.launcher import interrupt
from melissa.launcher.display import StudyDisplay, print_summary
from melissa.launcher.http_api import StatusAPI
from melissa.launcher.lock import StudyLock
from melissa.launcher.schedulers import make_scheduler
from melissa.launcher.schedulers.base import Scheduler
from melissa.launcher.schedulers.registry import backend
from melissa.launcher.state import StateStore
from melissa.launcher.study import Study
from melissa.paths import StudyPaths
from melissa.protocol.address import LAUNCHER_HOSTS_ENV, launcher_hosts

log = logging.getLogger("melissa.launcher")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="melissa-launcher",
        description="Run a Melissa study: start the server, run the simulations, collect results.",
    )
    parser.add_argument("-c", "--config", help="the study's config.json")
    parser.add_argument(
        "--print-options", action="store_true",
        help="print every config key with its type, default and meaning, then exit",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the study already in output_dir (its results and logs are deleted)",
    )
    parser.add_argument(
        "--resume", nargs="?", const="", metavar="OUTPUT_DIR",
        help="continue the study in output_dir after the launcher itself died (its config from "
        "-c config.json, or from OUTPUT_DIR's study.db); completed simulations are kept",
    )
    parser.add_argument(
        "--try-one", action="store_true",
        help="run one simulation against a throwaway server with the study's config and report "
        "what arrived (fields, sizes, time steps, dtype, timing) and any error; output_dir is "
        "not touched",
    )
    parser.add_argument(
        "--parameters", nargs="+", type=float, metavar="VALUE",
        help="with --try-one: the parameter values, in the order of the config's parameters "
        "(default: the design's first ones)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_options:
        print_options()
        return 0
    resume = args.resume is not None
    if args.parameters is not None and not args.try_one:
        _error("--parameters goes with --try-one")
        return 2
    if args.try_one and (resume or args.overwrite or not args.config):
        _error("--try-one takes -c config.json only (it does not touch the study)")
        return 2
    if resume and args.overwrite:
        _error("--resume continues the study in output_dir, --overwrite replaces it: give one")
        return 2
    if resume and args.resume and args.config:
        _error("--resume takes the output directory or -c config.json, not both")
        return 2
    if not args.config and not (resume and args.resume):
        _error("give the study's config with -c config.json (see --print-options for its keys)")
        return 2
    try:
        loaded = load_config(args.config) if args.config else _stored_config(Path(args.resume))
    except MelissaError as exc:
        _error(str(exc))
        return 2
    # Log records go to logs/launcher.log only (added once the output directory exists).
    logging.getLogger("melissa").addHandler(logging.NullHandler())
    if args.try_one:
        from melissa.launcher.try_one import try_one  # the server's code only for this

        try:
            return try_one(loaded, args.parameters, Console())
        except MelissaError as exc:
            _error(str(exc))
            return 2
    interrupt.install()  # Ctrl-C or kill PID: cancel the jobs
    return run_study(loaded, Console(), overwrite=args.overwrite, resume=resume)


def _stored_config(output_dir: Path) -> LoadedConfig:
    """The config a study in `output_dir` was started with (from its study.db)."""
    db = StudyPaths(output_dir.resolve()).state_db
    if not db.is_file():
        raise StudyError(f"no Melissa study in {output_dir} (no {db.name}) to resume")
    store = StateStore(db)
    try:
        info = store.study()
    finally:
        store.close()
    return LoadedConfig(parse_config(info["config_json"], str(db)), Path(info["config_path"]))


def _error(message: str) -> None:
    print(f"melissa-launcher: error: {message}", file=sys.stderr)


def run_study(loaded: LoadedConfig, console: Console, overwrite: bool, resume: bool = False,
              scheduler: Scheduler | None = None) -> int:
    """Run (or resume) the study; the exit status. `scheduler`: the backend to use instead of
    the one launcher_config.scheduler names (bench/launcher_scale.py counts its calls)."""
    started = time.monotonic()
    launcher_config = loaded.config.launcher_config
    # Every job inherits it: a server on another node advertises the address that routes here.
    local = backend(launcher_config.scheduler).local
    os.environ.setdefault(LAUNCHER_HOSTS_ENV, ",".join(launcher_hosts(local)))
    server = loaded.config.server_config
    if not local and server.interface is None and server.bind_address.startswith("127."):
        console.print(
            f"Note: server_config.bind_address is {server.bind_address}, which only the "
            "server's own node reaches; on a cluster of several nodes set it to 0.0.0.0 "
            "(docs/schedulers.md).", soft_wrap=True)
    paths = StudyPaths(loaded.output_dir)
    if scheduler is None:
        try:
            scheduler = make_scheduler(launcher_config, paths)
        except MelissaError as exc:
            _error(str(exc))
            return 1
    study: Study | None = None
    api: StatusAPI | None = None
    lock: StudyLock | None = None
    try:
        if resume and not paths.state_db.is_file():
            raise StudyError(f"no study to resume in {paths.root} (no study.db): start it "
                             "without --resume")
        lock = StudyLock.acquire(paths.root)  # one live launcher per study
        if lock.taken_over is not None:
            console.print(f"Took over the study lock of {lock.taken_over.describe()}, which is "
                          "gone.", soft_wrap=True, highlight=False)
        study = (Study.resume(loaded, scheduler) if resume
                 else Study.create(loaded, scheduler, overwrite=overwrite))
        if study is None:
            console.print(f"The study in {paths.root} had already finished: nothing to "
                          "resume.", soft_wrap=True)
            return 0
        api = StatusAPI(study.board, study.token_hex, launcher_config.http_bind,
                        launcher_config.http_port, study.job_limit)
        api.start(study.paths.launcher_info)
        console.print(f"Watch it with: melissa-monitor {study.paths.root}")
        with StudyDisplay(console) as display:
            outcome = study.run(display)
        plots = list(outcome.plots)  # breed.png of an active-sampling study
        sa = loaded.config.sa_config  # None for a deep-learning study: nothing to plot
        if sa is not None and sa.plot_time_steps != []:
            # matplotlib only once there is something to plot
            from melissa.plots import plot_convergence, plot_statistics

            steps = sa.plot_time_steps
            for path in outcome.results:
                plots += plot_statistics(path, study.paths.plots, steps, sa.plot_cells)
            convergence = plot_convergence(study.paths.sobol_convergence, study.paths.plots)
            plots += [convergence] if convergence is not None else []
        print_summary(
            console, study.store.simulations(), study.paths.root, outcome.results, plots,
            study.server_status, time.monotonic() - started, study.paths.simulation_log,
            study.server_restarts, study.stopped,
        )
        if outcome.completed == 0:
            raise StudyError("no simulation completed: see the failed simulations above")
        return 0
    except KeyboardInterrupt:
        _error("interrupted; cancelling every job. Continue the study with: "
               f"melissa-launcher --resume {paths.root}")
        return 130
    except MelissaError as exc:
        log.error("%s", exc)
        _error(str(exc))
        return 1
    finally:
        if api is not None:
            api.close()
        if study is not None:
            study.close()
        else:
            scheduler.close()
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    sys.exit(main())
