"""`melissa-launcher -c config.json`: run a whole study and exit 0 when it completed."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from rich.console import Console

from melissa.config import LoadedConfig, load_config
from melissa.config.options import print_options
from melissa.errors import MelissaError, StudyError
from melissa.launcher.display import StudyDisplay, print_summary
from melissa.launcher.http_api import StatusAPI
from melissa.launcher.schedulers import make_scheduler
from melissa.launcher.study import Study
from melissa.paths import StudyPaths

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_options:
        print_options()
        return 0
    if not args.config:
        _error("give the study's config with -c config.json (see --print-options for its keys)")
        return 2
    try:
        loaded = load_config(args.config)
    except MelissaError as exc:
        _error(str(exc))
        return 2
    # Log records go to logs/launcher.log only (added once the output directory exists).
    logging.getLogger("melissa").addHandler(logging.NullHandler())
    return run_study(loaded, Console(), overwrite=args.overwrite)


def _error(message: str) -> None:
    print(f"melissa-launcher: error: {message}", file=sys.stderr)


def run_study(loaded: LoadedConfig, console: Console, overwrite: bool) -> int:
    from melissa.plots import plot_statistics  # matplotlib only once there is something to plot

    started = time.monotonic()
    launcher_config = loaded.config.launcher_config
    scheduler = make_scheduler(launcher_config, StudyPaths(loaded.output_dir))
    study: Study | None = None
    api: StatusAPI | None = None
    try:
        study = Study(loaded, scheduler)
        study.prepare(overwrite)
        api = StatusAPI(study.board, study.token_hex, launcher_config.http_bind,
                        launcher_config.http_port)
        api.start(study.paths.launcher_info)
        console.print(f"Watch it with: melissa-monitor {study.paths.root}")
        with StudyDisplay(console) as display:
            outcome = study.run(display)
        plots = []
        sa = loaded.config.sa_config  # None for a deep-learning study: nothing to plot
        if sa is not None and sa.plot_time_steps != []:
            steps = sa.plot_time_steps
            for path in outcome.results:
                plots += plot_statistics(path, study.paths.plots, steps)
        assert study.store is not None
        print_summary(
            console, study.store.simulations(), study.paths.root, outcome.results, plots,
            study.server_status, time.monotonic() - started, study.paths.simulation_log,
        )
        if outcome.completed == 0:
            raise StudyError("no simulation completed: see the failed simulations above")
        return 0
    except KeyboardInterrupt:
        _error("interrupted; cancelling every job")
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


if __name__ == "__main__":
    sys.exit(main())
