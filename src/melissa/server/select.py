"""Which server class a study runs: the user's (server_config.server_filename/server_class),
else the deep-learning server for a dl_config, else the sensitivity-analysis server.

torch (or TensorFlow, dl_config.framework "tensorflow") is imported only for a deep-learning
study, never on the statistics path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from melissa.config import StudyConfig
from melissa.errors import ConfigError
from melissa.server.base import Server


def server_class(config: StudyConfig) -> type[Server]:
    cfg = config.server_config
    if cfg.server_filename is not None and cfg.server_class is not None:
        return load_server_class(Path(cfg.server_filename), cfg.server_class)
    if config.dl_config is not None and config.dl_config.framework == "tensorflow":
        from melissa.server.learning.tf_server import TensorFlowServer

        return TensorFlowServer
    if config.dl_config is not None:
        from melissa.server.learning.torch_server import DeepLearningServer

        return DeepLearningServer
    from melissa.server.sa.sensitivity import SensitivityServer

    return SensitivityServer


def load_server_class(path: Path, name: str) -> type[Server]:
    """Import `path` as a module and return its class `name`, a melissa Server subclass."""
    where = f"server_config.server_filename {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    # Its directory first on the path, so the file can import its neighbours (e.g. heat.py).
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"melissa_user_server_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"{where}: importing it failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, name, None)
    if cls is None:
        classes = sorted(k for k, v in vars(module).items() if isinstance(v, type))
        raise ConfigError(f"{where}: no class {name!r} in it (server_config.server_class); "
                          f"classes there: {classes}")
    if not (isinstance(cls, type) and issubclass(cls, Server)):
        raise ConfigError(f"{where}: {name} is not a subclass of melissa's Server (e.g. "
                          "melissa.server.learning.DeepLearningServer)")
    return cls
