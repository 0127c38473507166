"""What the language commands take from --config and --destinations: the destinations known,
the folders rule files may read, and what happens to a document no rule routes."""

from __future__ import annotations

import os
from typing import Iterable

from ..config import destinations_from_config, load_config, notifiers_from_config, windows_from_config


def load_destinations(args):
    """Destinations from --destinations NAME,... and/or the config file's destinations."""
    names = None
    if getattr(args, "destinations", None):
        names = {name.strip(): {} for name in args.destinations.split(",") if name.strip()}
    if getattr(args, "config", None):
        names = {**(names or {}), **destinations_from_config(args.config)}
    return names


def load_windows(args) -> frozenset[str] | None:
    """The delivery windows `during` may name: the config file's; None (not checked) without --config."""
    if getattr(args, "config", None):
        return windows_from_config(args.config)
    return None


def load_notifiers(args) -> frozenset[str] | None:
    """The notifiers `notify` may name: the config file's; None (not checked) without --config."""
    if getattr(args, "config", None):
        return notifiers_from_config(args.config)
    return None


def load_rules_folders(args) -> tuple[str, ...]:
    """Folders besides the rule file's own that imports and tables may read: the configuration's
    rules_folders; none without --config."""
    if getattr(args, "config", None):
        return load_config(args.config, secrets=False).rules_folders
    return ()


def searched_folders(path: str, paths: Iterable[str]) -> tuple[str, ...]:
    """The folders named on the command line that `path` was found in: a library file deep in
    `lint rules/` may read what its importers in rules/ may."""
    where = os.path.abspath(path)
    return tuple(folder for folder in paths if os.path.isdir(folder)
                 and where.startswith(os.path.abspath(folder).rstrip(os.sep) + os.sep))


def load_no_destination(args) -> str:
    """What happens to a document no rule routes: the config file's no_destination, else quarantine."""
    if getattr(args, "config", None):
        return load_config(args.config, secrets=False).no_destination
    return "quarantine"
