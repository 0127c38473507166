"""Console users written into the configuration file (`dicom-rules user add|remove` and the
console's Users page): only the console.users list changes, comments and layout kept, and the
file is replaced only once the new one is a valid configuration."""

from __future__ import annotations

import os
import tempfile

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from . import ConfigError, ConsoleUser, load_config


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # a hash on one line
    return yaml


def _rewrite(config_path: str, change) -> tuple[ConsoleUser, ...]:
    """Apply `change` to the loaded YAML, check the result as a configuration, put it in place;
    answers the users of the new file. A failure (ConfigError) leaves the file as it was."""
    load_config(config_path, secrets=False)  # the file must be valid before it is changed
    yaml = _yaml()
    with open(config_path, encoding="utf-8") as fh:
        data = yaml.load(fh)
    change(data)
    # Written beside the file, checked, then put in its place.
    folder = os.path.dirname(os.path.abspath(config_path))
    fd, temp = tempfile.mkstemp(prefix=".console-users-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.dump(data, fh)
        os.chmod(temp, os.stat(config_path).st_mode & 0o777)
        try:
            written = load_config(temp, secrets=False)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(temp, config_path)) from None
        os.replace(temp, config_path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return written.console.users if written.console else ()


def write_user(config_path: str, name: str, role: str, password_hash: str) -> tuple[bool, tuple[ConsoleUser, ...]]:
    """Add a user, or give one of that name a new role and hash (turning the console on in a
    configuration without one). Answers whether the user was there already, and the users now."""
    existed = False

    def change(data) -> None:
        nonlocal existed
        if data.get("console") is None:
            data["console"] = CommentedMap()
        if data["console"].get("users") is None:
            data["console"]["users"] = CommentedSeq()
        users = data["console"]["users"]
        entry = next((user for user in users if user.get("name") == name), None)
        existed = entry is not None
        if entry is None:
            entry = CommentedMap()
            users.append(entry)
        entry["name"] = name
        entry["role"] = role
        entry["password_hash"] = password_hash
    users = _rewrite(config_path, change)
    return existed, users


def remove_user(config_path: str, name: str) -> tuple[ConsoleUser, ...]:
    """Remove a user; ConfigError when there is none of that name. Answers the users now."""
    def change(data) -> None:
        users = (data.get("console") or {}).get("users") or []
        index = next((i for i, user in enumerate(users) if user.get("name") == name), None)
        if index is None:
            raise ConfigError(f"{config_path}: no console user {name!r}")
        del users[index]
    return _rewrite(config_path, change)
