"""Load config.json (JSON with `//` comments) into a validated StudyConfig, or fail in one line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from melissa.config import melissa_compat
from melissa.config.models import StudyConfig
from melissa.errors import ConfigError


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and the directory its relative paths are resolved from."""

    config: StudyConfig
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def output_dir(self) -> Path:
        return (self.base_dir / self.config.output_dir).resolve()


def strip_comments(text: str) -> str:
    """Remove `//` comments outside JSON strings, keeping line numbers intact."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic location as a key path, e.g. parameters[2].low."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(node, dict) and item not in node and item == node.get("distribution"):
            # pydantic inserts the union tag (e.g. 'uniform') into the path: skip it
            continue
        else:
            parts.append(f".{item}" if parts else str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return "".join(parts) or "(top level)"


def format_validation_error(exc: ValidationError, data: Any, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = _location(tuple(err["loc"]), data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (see melissa-launcher --print-options)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_not_found":
            where += ".distribution"
            msg = "required key is missing (uniform, loguniform or normal)"
        elif err["type"] == "union_tag_invalid":
            where += ".distribution"
            msg = f"{json.dumps(err['input'].get('distribution'))} is not one of {err['ctx']['expected_tags']}"
        elif "input" in err and not isinstance(err["input"], (dict, list)) and "got" not in msg:
            msg = f"{msg}, got {json.dumps(err['input'], default=str)}"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def parse_config(text: str, source: str) -> StudyConfig:
    try:
        data = json.loads(strip_comments(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object")
    data = melissa_compat.translate(data, source)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, data, source)) from None


def load_config(path: str | Path) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a config.json file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    config = _resolve_server_file(parse_config(text, str(path)), path)
    return LoadedConfig(config, path.resolve())


def _resolve_server_file(config: StudyConfig, path: Path) -> StudyConfig:
    """Make server_config.server_filename absolute (from the config's directory), so the server
    finds it wherever it runs; it must exist."""
    name = config.server_config.server_filename
    if name is None:
        return config
    server_file = (path.resolve().parent / name).resolve()
    if not server_file.is_file():
        raise ConfigError(f"{path}: server_config.server_filename: no file {server_file}")
    server_config = config.server_config.model_copy(update={"server_filename": str(server_file)})
    return config.model_copy(update={"server_config": server_config})
