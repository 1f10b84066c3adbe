"""config.json: schema, loading with clear errors, and the --print-options listing."""

from melissa.config.loader import LoadedConfig, load_config, parse_config
from melissa.config.models import SAConfig, StudyConfig

__all__ = ["LoadedConfig", "SAConfig", "StudyConfig", "load_config", "parse_config"]
