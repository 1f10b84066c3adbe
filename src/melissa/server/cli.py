"""`melissa-server OUTPUT_DIR`: the server job the launcher starts (users rarely call it)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from melissa.config import parse_config
from melissa.errors import MelissaError
from melissa.paths import StudyPaths
from melissa.protocol import token_from_hex
from melissa.server.sensitivity import SensitivityServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="melissa-server",
        description="Run a Melissa server for the study in OUTPUT_DIR (started by melissa-launcher;"
        " reads OUTPUT_DIR/study.json and the token from MELISSA_STUDY_TOKEN).",
    )
    parser.add_argument("output_dir", help="the study's output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(StudyPaths(Path(args.output_dir).resolve()))
    except MelissaError as exc:
        print(f"melissa-server: error: {exc}", file=sys.stderr)
        return 2


def _run(paths: StudyPaths) -> int:
    try:
        text = paths.study_file.read_text()
    except OSError as exc:
        raise MelissaError(f"cannot read the study file {paths.study_file}: {exc}") from None
    config = parse_config(text, str(paths.study_file))
    token_hex = os.environ.get("MELISSA_STUDY_TOKEN", "")
    if not token_hex:
        raise MelissaError("MELISSA_STUDY_TOKEN is not set (the launcher sets it)")
    server = SensitivityServer(config, paths, token_from_hex(token_hex))
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
