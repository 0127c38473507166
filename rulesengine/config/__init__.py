"""The router configuration: YAML validated by the JSON Schema in schema.json.

`load_config(path)` returns a Config or raises ConfigError whose message names
the file, the line and the key of every problem, in plain words.
"""

from __future__ import annotations

import difflib
import json
import os
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

from jsonschema import Draft202012Validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..lang.functions import DEFAULT_HASH_KEY, Secrets
from ..lang.groups import quiet_seconds


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file, line and key."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


@lru_cache(maxsize=None)
def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8"))


def schema_text() -> str:
    return json.dumps(schema(), indent=2) + "\n"


# ---- the model -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10
    artim: float = 5
    acse: float = 30
    dimse: float = 60
    network: float = 60


@dataclass(frozen=True)
class TLS:
    certificate: str
    private_key: str
    ca_certificates: str | None = None
    require_client_certificate: bool = True
    check_hostname: bool = True


# The services a listener can offer, as its `services` names them (the default: all of them).
LISTENER_SERVICES = ("echo", "store", "find", "move", "get", "mpps")


@dataclass(frozen=True)
class Listener:
    name: str
    ae_title: str
    port: int
    bind: str = "127.0.0.1"
    mode: str = "async"
    allowed_calling_aets: tuple[str, ...] = ()
    require_called_aet: bool = True
    association_file: str | None = None
    transfer_syntaxes: tuple[str, ...] | None = None
    accept_unknown_sop_classes: bool = True
    max_associations: int = 32
    max_pdu: int = 131072
    timeouts: Timeouts = Timeouts()
    tls: TLS | None = None
    services: tuple[str, ...] | None = None  # which DIMSE services it answers; None: every one
    partial_results: bool = True  # a forwarded C-FIND some destinations failed: the others' matches (0xB000)

    @property
    def offered_services(self) -> tuple[str, ...]:
        return LISTENER_SERVICES if self.services is None else self.services


@dataclass(frozen=True)
class Watch:
    name: str
    path: str
    pattern: str = "*"
    settle_seconds: float = 1.0
    done: str = ""
    failed: str = ""


@dataclass(frozen=True)
class Retry:
    delay: float = 2
    multiplier: float = 2
    cap: float = 300
    max_attempts: int = 20

    def wait(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return min(self.cap, self.delay * self.multiplier ** max(attempts - 1, 0))


@dataclass(frozen=True)
class DicomDestination:
    name: str
    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "ROUTER"
    max_associations: int = 1
    batch: int = 100
    max_pdu: int = 131072
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    tls: TLS | None = None
    retrieve: str = "c-move"  # how the router retrieves from it for a C-MOVE or C-GET: c-move | c-get
    type: str = "dicom"


@dataclass(frozen=True)
class FolderDestination:
    name: str
    path: str
    naming: str = "{SOPInstanceUID}.dcm"
    retry: Retry = Retry()
    type: str = "folder"


@dataclass(frozen=True)
class WorklistDestination:
    """A folder of worklist files that answers Modality Worklist queries; it takes no instances."""
    name: str
    path: str
    type: str = "worklist"


Destination = DicomDestination | FolderDestination | WorklistDestination


CONSOLE_ROLES = ("viewer", "operator", "admin")  # each may do what those before it may


@dataclass(frozen=True)
class ConsoleTLS:
    certificate: str
    private_key: str


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    role: str
    password_hash: str


@dataclass(frozen=True)
class Console:
    """The operations console (`dicom-rules console CONFIG`)."""
    bind: str = "127.0.0.1"
    port: int = 8104
    tls: ConsoleTLS | None = None
    session_minutes: int = 480
    metrics_token_file: str | None = None
    users: tuple[ConsoleUser, ...] = ()
    upload_max_mb: int = 64  # the bound of a file uploaded to the console (a dry-run of the rules)


@dataclass(frozen=True)
class JournalDatabase:
    """`journal: postgresql://USER@HOST:PORT/DATABASE`, and where its password is read
    (when the journal is opened, never kept in the configuration)."""

    url: str
    password_file: str | None = None
    password_env: str | None = None
    where: str = "journal"  # FILE:LINE: journal, for the errors of opening it

    def password(self) -> str | None:
        """The password from its file (the first line) or its environment variable; ValueError
        saying what is wrong (naming the key) when it cannot be read."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"journal_password_env: the environment variable {self.password_env} is not set")
            if not value:
                raise ValueError(f"journal_password_env: the environment variable {self.password_env} is empty")
            return value
        if self.password_file is not None:
            try:
                with open(self.password_file, encoding="utf-8") as fh:
                    value = fh.readline().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"journal_password_file: cannot read {self.password_file}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ValueError(f"journal_password_file: {self.password_file} is not UTF-8 text") from None
            if not value:
                raise ValueError(f"journal_password_file: the first line of {self.password_file} is empty")
            return value
        return None


def journal_url_problem(url: str) -> str | None:
    """What is wrong with a `journal:` address, or None."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a postgresql:// address: {exc}"
    if parts.scheme not in ("postgresql", "postgres"):
        return "not a postgresql:// address (postgresql://USER@HOST:PORT/DATABASE)"
    if parts.password is not None:
        return "the address holds a password: give it with journal_password_file or journal_password_env"
    if not parts.username:
        return "the address names no user (postgresql://USER@HOST:PORT/DATABASE)"
    if not parts.hostname:
        return "the address names no host (postgresql://USER@HOST:PORT/DATABASE)"
    if not parts.path.strip("/") or "/" in parts.path.strip("/"):
        return "the address names no database (postgresql://USER@HOST:PORT/DATABASE)"
    if port == 0:
        return "the port must be 1 to 65535"
    return None


@dataclass(frozen=True)
class Config:
    path: str
    storage: str
    rules: str
    rules_folders: tuple[str, ...] = ()  # besides the rule file's own: where imports and tables may be read
    no_destination: str = "quarantine"
    group_quiet_time: float = 300.0  # seconds: a group rule's quiet time unless it says `complete after`
    secrets: Secrets = Secrets()
    development_key: bool = True
    log_level: str = "info"
    log_file: str | None = None
    listeners: tuple[Listener, ...] = ()
    watch: tuple[Watch, ...] = ()
    destinations: dict[str, Destination] = field(default_factory=dict)
    console: Console | None = None  # None: no `console:` key, the console is off
    journal: JournalDatabase | None = None  # None: SQLite, in the storage folder
    node: str | None = None  # this router's name among the nodes on one journal; None: the host name
    processes: int | str = "auto"  # receiving processes (each with its worker process); auto: the cores
    journal_lease_seconds: float = 60.0  # how long a node's claim on a delivery lasts unless renewed
    lines: dict[tuple, int] = field(default_factory=dict, compare=False, repr=False)

    def at(self, *location) -> str:
        """`FILE:LINE: key` for a key of the file, e.g. at("listeners", 0, "tls", "certificate")."""
        line = self.lines.get(location)
        return f"{self.path}:{line}: {_where(location)}" if line else f"{self.path}: {_where(location)}"

    def process_count(self) -> int:
        """The receiving processes to run: `processes`, or for auto the cores this process may
        run on (its CPU affinity, where the system says), at most MAX_PROCESSES."""
        if self.processes != "auto":
            return int(self.processes)
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_PROCESSES))

    def destination_infos(self) -> dict[str, dict]:
        """What the rules compiler needs to know of each destination, and which messages it answers
        (None: not known, so the checks assume it answers them)."""
        return {name: {"ae_title": getattr(d, "ae_title", None), "host": getattr(d, "host", None),
                       "port": getattr(d, "port", None), "type": d.type,
                       "answers": DESTINATION_ANSWERS.get(d.type)} for name, d in self.destinations.items()}


MAX_PROCESSES = 64  # as the schema's processes maximum


# The messages each type of destination answers: a DICOM peer all of them, a folder only stores,
# a worklist folder only answers worklist queries.
DESTINATION_ANSWERS = {
    "dicom": frozenset({"C-STORE", "C-FIND", "C-MOVE", "C-GET", "N-CREATE", "N-SET"}),
    "folder": frozenset({"C-STORE"}),
    "worklist": frozenset({"C-FIND"}),
}


# ---- reading ----------------------------------------------------------------------------


def _load_yaml(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return YAML(typ="rt").load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None


def _line_of(data, location) -> int | None:
    """The 1-based line of the deepest key or item of `location` that ruamel can place."""
    line = None
    node = data
    for part in location:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                line = (lc.key(part) if isinstance(part, str) else lc.item(part))[0] + 1
            node = node[part]
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line


def _where(location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "top level"


_TYPE_WORDS = {"string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
               "object": "a mapping of keys to values", "array": "a list"}


def _plain(error) -> str:
    """A jsonschema error in plain words."""
    where = _where(error.absolute_path)
    validator, expected, value = error.validator, error.validator_value, error.instance
    if validator == "required":
        missing = [k for k in expected if k not in value]
        return f"{where}: needs {', '.join(missing)}"
    if validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extras = [k for k in value if k not in known]
        hints = []
        for extra in extras:
            close = difflib.get_close_matches(str(extra), known, n=1)
            hints.append(f"{extra!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        return f"{where}: unknown key {', '.join(hints)}; known keys: {', '.join(known)}"
    if validator == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return f"{where}: must be {' or '.join(_TYPE_WORDS.get(k, k) for k in kinds)}, not {value!r}"
    if validator == "enum":
        return f"{where}: must be one of {', '.join(map(str, expected))}, not {value!r}"
    if validator == "const":
        return f"{where}: must be {expected!r}"
    if validator in ("minimum", "exclusiveMinimum"):
        word = "at least" if validator == "minimum" else "more than"
        return f"{where}: must be {word} {expected}, not {value!r}"
    if validator == "maximum":
        return f"{where}: must be at most {expected}, not {value!r}"
    if validator == "anyOf" and all(_alternative(option) for option in expected):
        return f"{where}: must be {', or '.join(map(_alternative, expected))}, not {value!r}"
    if validator in ("minLength", "maxLength"):
        return f"{where}: {value!r} is too {'short' if validator == 'minLength' else 'long'}"
    if validator in ("pattern", "propertyNames"):
        description = error.schema.get("description")
        return f"{where}: {value!r} is not valid" + (f": {description}" if description else "")
    return f"{where}: {error.message}"


def _alternative(option: dict) -> str | None:
    """One of the values an anyOf admits, in plain words (None: no words for it here)."""
    if "const" in option:
        return str(option["const"])
    if option.get("type") == "integer" and "minimum" in option and "maximum" in option:
        return f"a whole number from {option['minimum']} to {option['maximum']}"
    return None


def _is_key_of(data, location, name) -> bool:
    """Is `name` a key of the mapping at `location` (a propertyNames error names a key)?"""
    node = data
    for part in location:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict) and isinstance(name, str) and name in node


class _Problem(NamedTuple):
    line: int  # 0 when the file gives none
    text: str  # FILE:LINE: key: what is wrong


def _schema_problems(data, path: str) -> tuple[list[_Problem], list[tuple]]:
    """What the schema refuses, and where: the locations of the values it refused (for a
    missing or unknown key, that key), which the other checks then leave alone."""
    validator = Draft202012Validator(schema())
    found, refused = [], []
    for error in validator.iter_errors(data):
        if error.validator in ("if", "allOf"):
            continue  # their sub-errors are reported as they are
        location = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            extras = [k for k in error.instance if k not in known]
            location += extras[:1]  # the line of the (first) unknown key, not of its parent
            refused += [tuple(location[:-1]) + (extra,) for extra in extras]
        elif error.validator == "required" and isinstance(error.instance, dict):
            refused += [tuple(location) + (key,) for key in error.validator_value if key not in error.instance]
        elif error.validator == "pattern" and _is_key_of(data, location, error.instance):
            location.append(error.instance)  # propertyNames: the line of the bad name itself
            refused.append(tuple(location))
        else:
            refused.append(tuple(location))
        line = _line_of(data, location)
        found.append(_Problem(line or 0, f"{path}:{line}: {_plain(error)}" if line else f"{path}: {_plain(error)}"))
    return found, refused


def _report(problems: list[_Problem]) -> list[str]:
    """In the order of the file, each once."""
    return list(dict.fromkeys(problem.text for problem in sorted(problems, key=lambda p: p.line)))


def validate(data, path: str) -> list[str]:
    """What the schema refuses, each `FILE:LINE: key: what is wrong`."""
    return _report(_schema_problems(data, path)[0])


def load_config(path: str | os.PathLike, secrets: bool = True) -> Config:
    """Read and check a configuration, reporting every problem of the file at once; with
    `secrets=False` the hash key is not looked up (lint needs the destinations, not the key)."""
    path = os.fspath(path)
    data = _load_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    found, refused = _schema_problems(data, path)
    found += _Checks(data, path, refused, secrets).run()
    if found:
        problems = _report(found)
        raise ConfigError("\n".join(problems), problems)
    return _build(data, path, secrets)


def _resolve(base: str, value: str | None) -> str | None:
    if value is None:
        return None
    return os.path.normpath(os.path.join(base, os.path.expanduser(str(value))))


def _timeouts(data) -> Timeouts:
    return Timeouts(**dict(data or {}))


def _tls(data, base: str) -> TLS | None:
    if not data:
        return None
    return TLS(_resolve(base, data["certificate"]), _resolve(base, data["private_key"]),
               _resolve(base, data.get("ca_certificates")), bool(data.get("require_client_certificate", True)),
               bool(data.get("check_hostname", True)))


def _whole(values: dict, *keys: str) -> dict:
    """Whole numbers as int: the schema's "integer" also admits 11112.0, which sockets refuse."""
    for key in keys:
        if key in values:
            values[key] = int(values[key])
    return values


def _duration(value) -> float:
    """Seconds, from a number of them or a duration as the rules write it (`90s`, `10m`, `1h`)."""
    return float(value) if isinstance(value, (int, float)) else quiet_seconds(str(value))


def _retry(data) -> Retry:
    return Retry(**_whole(dict(data or {}), "max_attempts"))


def _hash_key(data: dict, base: str) -> tuple[bytes | None, str | None, str | None]:
    """(the key, or None) and (the key of `secrets` that names it, what is wrong with it)."""
    if "hash_key_env" in data:
        name = data["hash_key_env"]
        if name not in os.environ:
            return None, "hash_key_env", f"the environment variable {name} is not set"
        if not os.environ[name]:
            return None, "hash_key_env", f"the environment variable {name} is empty"
        return os.environ[name].encode("utf-8"), None, None
    if "hash_key_file" in data:
        key_path = _resolve(base, data["hash_key_file"])
        try:
            with open(key_path, encoding="utf-8") as fh:
                key = fh.readline().strip().encode("utf-8")
        except OSError as exc:
            return None, "hash_key_file", f"cannot read {key_path}: {exc.strerror}"
        except UnicodeDecodeError:
            return None, "hash_key_file", f"{key_path} is not UTF-8 text"
        if not key:
            return None, "hash_key_file", f"the first line of {key_path} is empty"
        return key, None, None
    return None, None, None


def _build(data, path: str, resolve_secrets: bool = True) -> Config:
    """The configuration from a file that passed every check."""
    base = os.path.dirname(os.path.abspath(path))
    listeners = []
    for item in data.get("listeners") or []:
        values = _whole(dict(item), "port", "max_associations", "max_pdu")
        values["allowed_calling_aets"] = tuple(values.get("allowed_calling_aets") or ())
        if "transfer_syntaxes" in values:
            values["transfer_syntaxes"] = tuple(values["transfer_syntaxes"])
        if "services" in values:
            values["services"] = tuple(dict.fromkeys(values["services"]))
        values["association_file"] = _resolve(base, values.get("association_file"))
        values["timeouts"] = _timeouts(values.get("timeouts"))
        values["tls"] = _tls(values.get("tls"), base)
        listeners.append(Listener(**values))
    watches = []
    for item in data.get("watch") or []:
        values = dict(item)
        folder = _resolve(base, values["path"])
        values["path"] = folder
        values["done"] = _resolve(base, values.get("done")) or os.path.join(folder, "done")
        values["failed"] = _resolve(base, values.get("failed")) or os.path.join(folder, "failed")
        watches.append(Watch(**values))
    destinations: dict[str, Destination] = {}
    for name, item in (data.get("destinations") or {}).items():
        values = _whole({k: v for k, v in dict(item).items() if k != "type"}, "port", "max_associations", "batch",
                        "max_pdu")
        if item["type"] == "worklist":
            destinations[str(name)] = WorklistDestination(name=str(name), path=_resolve(base, values["path"]))
            continue
        values["retry"] = _retry(values.get("retry"))
        if item["type"] == "dicom":
            values["timeouts"] = _timeouts(values.get("timeouts"))
            values["tls"] = _tls(values.get("tls"), base)
            destinations[str(name)] = DicomDestination(name=str(name), **values)
        else:
            values["path"] = _resolve(base, values["path"])
            destinations[str(name)] = FolderDestination(name=str(name), **values)
    secrets_data = data.get("secrets") or {}
    key = _hash_key(secrets_data, base)[0] if resolve_secrets else None
    log = data.get("log") or {}
    return Config(
        path=path, storage=_resolve(base, data["storage"]), rules=_resolve(base, data["rules"]),
        rules_folders=tuple(_resolve(base, folder) for folder in data.get("rules_folders") or ()),
        no_destination=str(data.get("no_destination", "quarantine")),
        group_quiet_time=_duration(data.get("group_quiet_time", 300.0)),
        secrets=Secrets(key or DEFAULT_HASH_KEY, str(secrets_data.get("uid_root", "2.25"))),
        development_key=key is None, log_level=str(log.get("level", "info")), log_file=_resolve(base, log.get("file")),
        listeners=tuple(listeners), watch=tuple(watches), destinations=destinations,
        console=_console(data.get("console"), base), journal=_journal(data, base, path),
        node=str(data["node"]) if data.get("node") else None,
        processes=int(data["processes"]) if data.get("processes", "auto") != "auto" else "auto",
        journal_lease_seconds=float(data.get("journal_lease_seconds", 60.0)), lines=_lines(data),
    )


def _journal(data: dict, base: str, path: str) -> JournalDatabase | None:
    if "journal" not in data:
        return None
    line = _line_of(data, ["journal"])
    return JournalDatabase(str(data["journal"]), _resolve(base, data.get("journal_password_file")),
                           data.get("journal_password_env"), f"{path}:{line}: journal" if line else f"{path}: journal")


def _console(data, base: str) -> Console | None:
    if data is None:
        return None
    values = _whole(dict(data), "port", "session_minutes", "upload_max_mb")
    tls = values.get("tls")
    values["tls"] = ConsoleTLS(_resolve(base, tls["certificate"]), _resolve(base, tls["private_key"])) if tls else None
    values["metrics_token_file"] = _resolve(base, values.get("metrics_token_file"))
    values["users"] = tuple(ConsoleUser(str(user["name"]), str(user["role"]), str(user["password_hash"]))
                            for user in values.get("users") or ())
    return Console(**values)


def _lines(data, location: tuple = ()) -> dict[tuple, int]:
    """The 1-based line of every key and list item of the file, by location."""
    lines: dict[tuple, int] = {}
    lc = getattr(data, "lc", None)
    if isinstance(data, dict):
        for key, value in data.items():
            if lc is not None and key in lc.data:
                lines[location + (key,)] = lc.key(key)[0] + 1
            lines.update(_lines(value, location + (key,)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            if lc is not None and index in lc.data:
                lines[location + (index,)] = lc.item(index)[0] + 1
            lines.update(_lines(value, location + (index,)))
    return lines


_EVERY_INTERFACE = ("0.0.0.0", "::", "")


class _Checks:
    """The checks beyond the schema (names and ports that must be unique, naming templates,
    the hash key, the log folder), made on whatever the schema accepted: a value the schema
    refused is reported once, by the schema, and not checked again here."""

    def __init__(self, data, path: str, refused: list[tuple], secrets: bool):
        self.data, self.path, self.refused, self.secrets = data, path, refused, secrets
        self.base = os.path.dirname(os.path.abspath(path))
        self.found: list[_Problem] = []

    def run(self) -> list[_Problem]:
        if not isinstance(self.data, dict):
            return []
        self._unique()
        self._durations()
        self._naming()
        self._worklists()
        self._secrets()
        self._journal()
        self._log()
        self._console()
        return self.found

    def _durations(self) -> None:
        text = self._value("group_quiet_time")
        if text is not None:
            try:
                quiet_seconds(text)
            except ValueError as exc:
                self._problem(("group_quiet_time",), str(exc).replace("complete after ", ""))

    def _value(self, *location, kind: type | tuple = str):
        """The value at `location` if the schema accepted it and it is of `kind`, else None."""
        if any(location[:len(bad)] == bad for bad in self.refused):
            return None
        node = self.data
        for part in location:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node if isinstance(node, kind) and not isinstance(node, bool) else None

    def _items(self, section: str) -> list[tuple[int, dict]]:
        items = self._value(section, kind=list) or []
        return [(number, item) for number, item in enumerate(items) if isinstance(item, dict)]

    def _problem(self, location, text: str, line_of=None) -> None:
        """A problem of the key at `location`, on the line of `line_of` (by default, that key)."""
        line = _line_of(self.data, list(line_of or location))
        where = f"{self.path}:{line}: {_where(location)}" if line else f"{self.path}: {_where(location)}"
        self.found.append(_Problem(line or 0, f"{where}: {text}"))

    def _unique(self) -> None:
        """Names are unique across listeners and watched folders; no two listeners share a
        port (an address of every interface conflicts with any other address on that port)."""
        named = [(self._value(section, number, "name"), (section, number, "name"))
                 for section in ("listeners", "watch") for number, _ in self._items(section)]
        named = [(name, location) for name, location in named if name is not None]
        for position, (name, location) in enumerate(named):
            first = next(loc for other, loc in named[:position + 1] if other == name)
            if first != location:
                self._problem(location, f"the name {name!r} is already used by {_where(first)}; "
                                        "listeners and watched folders need names of their own")
        bound = []
        for number, item in self._items("listeners"):
            port = self._value("listeners", number, "port", kind=(int, float))
            bind = self._value("listeners", number, "bind") if "bind" in item else Listener.bind
            if port is None or bind is None:
                continue
            for index, other_port, other_bind, other_name in bound:
                if other_port == port and (other_bind == bind or other_bind in _EVERY_INTERFACE
                                           or bind in _EVERY_INTERFACE):
                    self._problem(("listeners", number, "port"), f"port {int(port)} on {bind} is already used by "
                                                                 f"listeners[{index}] ({other_name}, on {other_bind})")
                    break
            bound.append((number, port, bind, item.get("name")))

    def _naming(self) -> None:
        for name, item in (self._value("destinations", kind=dict) or {}).items():
            if not isinstance(item, dict) or self._value("destinations", name, "type") != "folder":
                continue
            naming = self._value("destinations", name, "naming")
            for problem in check_naming(naming) if naming is not None else ():
                self._problem(("destinations", name, "naming"), problem)

    def _worklists(self) -> None:
        """A worklist folder must be there: unlike a folder destination's, nothing creates it."""
        for name, item in (self._value("destinations", kind=dict) or {}).items():
            if not isinstance(item, dict) or self._value("destinations", name, "type") != "worklist":
                continue
            path = self._value("destinations", name, "path")
            folder = _resolve(self.base, path) if path else None
            if folder is None:
                continue
            if not os.path.exists(folder):
                self._problem(("destinations", name, "path"), f"the worklist folder {folder} does not exist")
            elif not os.path.isdir(folder):
                self._problem(("destinations", name, "path"), f"{folder} is not a folder")

    def _secrets(self) -> None:
        data = self._value("secrets", kind=dict)
        if data is None:
            return
        if "hash_key_env" in data and "hash_key_file" in data:
            self._problem(("secrets",), "hash_key_env and hash_key_file both name the hash key; keep one",
                          line_of=("secrets", "hash_key_file"))
            return
        if not self.secrets or not any(self._value("secrets", key) for key in ("hash_key_env", "hash_key_file")):
            return
        _key, key, problem = _hash_key(data, self.base)
        if problem is not None:
            self._problem(("secrets", key), problem)

    def _journal(self) -> None:
        """The database's address; its password from one place, read now (unless secrets are not
        looked up), so that a start fails here, naming the key, rather than later."""
        url = self._value("journal")
        if url is not None:
            problem = journal_url_problem(url)
            if problem:
                self._problem(("journal",), problem)
        sources = [key for key in ("journal_password_file", "journal_password_env") if key in self.data]
        if len(sources) == 2:
            self._problem(("journal_password_env",), "journal_password_file and journal_password_env both name the "
                                                     "password; keep one")
            return
        if sources and "journal" not in self.data:
            self._problem((sources[0],), "a password without a journal: set journal: postgresql://... too")
            return
        if not self.secrets or not sources or self._value(sources[0]) is None:
            return
        settings = JournalDatabase(url or "", _resolve(self.base, self._value("journal_password_file")),
                                   self._value("journal_password_env"))
        try:
            settings.password()
        except ValueError as exc:
            self._problem((sources[0],), str(exc).split(": ", 1)[1])

    def _log(self) -> None:
        log_file = self._value("log", "file")
        folder = os.path.dirname(_resolve(self.base, log_file)) if log_file else None
        if folder and not os.path.isdir(folder):
            self._problem(("log", "file"), f"the folder {folder} does not exist")


    def _console(self) -> None:
        """Console users have names of their own."""
        seen: dict[str, int] = {}
        users = self._value("console", "users", kind=list) or []
        for number, _ in enumerate(users):
            name = self._value("console", "users", number, "name")
            if name is None:
                continue
            if name in seen:
                self._problem(("console", "users", number, "name"),
                              f"the user {name!r} is already console.users[{seen[name]}]")
            else:
                seen[name] = number


def naming_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def check_naming(template: str) -> list[str]:
    """Problems with a folder destination's naming template: braces that do not pair,
    {} without a keyword, unknown keywords."""
    from ..lang.paths import lookup_keyword
    try:
        fields = naming_fields(template)
    except ValueError as exc:
        return [f"{template!r}: {exc} (write {{{{ and }}}} for literal braces)"]
    problems = []
    for name in fields:
        if not name:
            problems.append(f"{template!r}: {{}} names no keyword")
        elif lookup_keyword(name) is None:
            problems.append(f"{{{name}}} is not a DICOM keyword")
    return problems


def destinations_from_config(path: str | os.PathLike) -> dict[str, dict]:
    """name -> {ae_title, host, port}: what `lint --config` and `dry-run --config` need."""
    return load_config(path, secrets=False).destination_infos()

