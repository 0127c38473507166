"""Router configuration (YAML). The language tools read only the destinations from it."""

from __future__ import annotations

import os

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file, line and key."""


def _load_yaml(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return YAML(typ="rt").load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None


def destinations_from_config(path: str | os.PathLike) -> dict[str, dict]:
    """name -> {ae_title, host, port} for each destination in a configuration file."""
    path = os.fspath(path)
    data = _load_yaml(path) or {}
    destinations = data.get("destinations") if hasattr(data, "get") else None
    if destinations is None:
        return {}
    if not hasattr(destinations, "items"):
        line = data.lc.key("destinations")[0] + 1 if hasattr(data, "lc") else 0
        raise ConfigError(f"{path}:{line}: destinations must be a mapping of names to settings")
    out = {}
    for name, settings in destinations.items():
        settings = settings if hasattr(settings, "get") else {}
        out[str(name)] = {"ae_title": settings.get("ae_title"), "host": settings.get("host"),
                          "port": settings.get("port")}
    return out
