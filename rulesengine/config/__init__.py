"""The router configuration: YAML validated by the JSON Schema in schema.json.

`load_config(path)` returns a Config or raises ConfigError whose message names
the file, the line and the key of every problem, in plain words.
"""

from __future__ import annotations

import difflib
import json
import math
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
from ..windows import DeliveryWindow, WindowError
from .notification_context import DISK_EVENTS, EVENTS_WITH_AFTER


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
    window: str | None = None  # a window of Config.windows: deliveries wait outside it
    type: str = "dicom"


@dataclass(frozen=True)
class FolderDestination:
    name: str
    path: str
    naming: str = "{SOPInstanceUID}.dcm"
    retry: Retry = Retry()
    window: str | None = None  # a window of Config.windows: deliveries wait outside it
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


# ---- notifications: notifiers and what they are told (notifiers:, notify:) ----------------


def read_secret(env: str | None, file: str | None, env_key: str, file_key: str) -> str | None:
    """A secret from its environment variable, or the first line of its file, read when it is
    used (never kept in the configuration); ValueError naming the key when it cannot be."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{env_key}: the environment variable {env} is not set")
        if not value:
            raise ValueError(f"{env_key}: the environment variable {env} is empty")
        return value
    if file is not None:
        try:
            with open(file, encoding="utf-8") as fh:
                value = fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{file_key}: cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{file_key}: {file} is not UTF-8 text") from None
        except ValueError:  # open() refuses a name with a NUL character
            raise ValueError(f"{file_key}: {file!r} is not a file name") from None
        if not value:
            raise ValueError(f"{file_key}: the first line of {file} is empty")
        return value
    return None


@dataclass(frozen=True)
class SecretHeader:
    """A webhook header whose value is a secret: `{value_env: NAME}` or `{value_file: PATH}`."""
    value_env: str | None = None
    value_file: str | None = None

    def read(self) -> str:
        return read_secret(self.value_env, self.value_file, "value_env", "value_file") or ""


DEFAULT_WEBHOOK_BODY = "{{ notification | tojson }}"  # every value the event gives, as one JSON object
DEFAULT_EMAIL_SUBJECT = ("[{{ node }}] {{ event }}{% if destination %}: {{ destination }}"
                         "{% elif message %}: {{ message }}{% elif rule %}: {{ rule }}{% endif %}")
DEFAULT_EMAIL_BODY = ("{{ event }} on {{ node }} at {{ time }}\n"
                      "{% for name, value in notification | dictsort %}{{ name }}: {{ value }}\n{% endfor %}")


@dataclass(frozen=True)
class WebhookNotifier:
    """An HTTP POST of a JSON body, made from a template."""
    name: str
    url: str
    headers: dict[str, "str | SecretHeader"] = field(default_factory=dict)
    body: str = DEFAULT_WEBHOOK_BODY
    timeout: float = 10
    retry: Retry = Retry()
    patient_data: bool = False
    ca_certificates: str | None = None
    type: str = "webhook"


@dataclass(frozen=True)
class EmailNotifier:
    """A mail through an SMTP server."""
    name: str
    host: str
    sender: str
    to: tuple[str, ...]
    port: int | None = None  # None: 25, or 465 with tls: implicit
    tls: str = "starttls"  # starttls | implicit | none
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    subject: str = DEFAULT_EMAIL_SUBJECT
    body: str = DEFAULT_EMAIL_BODY
    timeout: float = 30
    retry: Retry = Retry()
    patient_data: bool = False
    ca_certificates: str | None = None
    type: str = "email"

    def smtp_port(self) -> int:
        return self.port if self.port is not None else (465 if self.tls == "implicit" else 25)

    def password(self) -> str | None:
        return read_secret(self.password_env, self.password_file, "password_env", "password_file")


Notifier = WebhookNotifier | EmailNotifier


@dataclass(frozen=True)
class Subscription:
    """`notify:` an event goes to these notifiers (for destination-unreachable: once it has
    lasted `after` seconds)."""
    event: str
    to: tuple[str, ...]
    after: float = 0.0


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value) -> float:
    """`after:` in seconds: a number, or text such as 90s, 10m, 2h, 1d."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    return float(text[:-1]) * _DURATION[text[-1]]


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
        return read_secret(self.password_env, self.password_file, "journal_password_env", "journal_password_file")


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


# ---- retention and disk space (docs/operations.md, "Retention and cleanup") --------------

# Durations: a whole number and its unit (30m, 12h, 7d); 0 alone means none.
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_RETENTION_SECONDS = 36500 * 86400  # 100 years: anything longer is a slip of the keyboard
# Sizes: a number and its unit, decimal (KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB), or a
# percentage of the storage folder's file system.
_SIZE_UNITS = {"B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
               "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "TiB": 2 ** 40}


def parse_duration(value) -> float:
    """Seconds of a duration as the configuration writes it (`30m`, `12h`, `7d`, or 0).
    Raises ValueError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not a duration such as 30m, 12h or 7d")
    if isinstance(value, int):
        if value != 0:
            raise ValueError(f"{value!r} has no unit: write it as 30m, 12h or 7d (0 alone means none)")
        return 0.0
    text = value.strip()
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or not number.isascii():
        raise ValueError(f"{value!r} is not a duration such as 30m, 12h or 7d")
    seconds = float(int(number) * _DURATION_UNITS[unit])
    if seconds > MAX_RETENTION_SECONDS:
        raise ValueError(f"{value!r} is more than 100 years (36500d); leave the key out to keep them for ever")
    return seconds


def format_duration(seconds: float) -> str:
    """A number of seconds as the configuration would write it, in its largest whole unit."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _DURATION_UNITS[unit] == 0:
            return f"{int(seconds // _DURATION_UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Retention:
    """How long the router keeps what it is done with, in seconds: received instances once
    delivered (0: removed at once), and files in the quarantine and the watched folders'
    done/ and failed/ folders (None: kept for ever)."""

    delivered: float = 0
    quarantine: float | None = None
    done: float | None = None
    failed: float | None = None


@dataclass(frozen=True)
class FreeSpaceFloor:
    """`storage_min_free`: below this much free space on the storage folder's file system,
    new instances are refused. Either a number of bytes or a percentage of the file system."""

    text: str  # as the configuration says it, for messages
    bytes: int | None = None
    percent: float | None = None

    def required(self, total_bytes: int) -> int:
        """The free bytes needed on a file system of `total_bytes`."""
        if self.percent is not None:
            return int(total_bytes * self.percent / 100)
        return int(self.bytes or 0)


def parse_free_space(value) -> FreeSpaceFloor | None:
    """`storage_min_free` (`2GB`, `500MiB`, `5%`; 0: no floor). Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not a size such as 2GB, 500MB or 5%")
    if isinstance(value, int):
        if value != 0:
            raise ValueError(f"{value!r} has no unit: write it as 2GB, 500MB or 5% (0 alone means no floor)")
        return None
    text = value.strip()
    if text.endswith("%"):
        number = text[:-1].strip()
        try:
            percent = float(number)
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage such as 5%") from None
        if not 0 <= percent <= 100 or number.lower() in ("nan", "inf", "+inf", "infinity"):
            raise ValueError(f"{value!r}: a percentage is 0% to 100%")
        return FreeSpaceFloor(text, percent=percent) if percent else None
    unit = next((unit for unit in sorted(_SIZE_UNITS, key=len, reverse=True) if text.endswith(unit)), None)
    number = text[:-len(unit)].strip() if unit else ""
    if unit is None or not number.replace(".", "", 1).isdigit() or not number.isascii():
        raise ValueError(f"{value!r} is not a size such as 2GB, 500MB or 5%")
    size = int(float(number) * _SIZE_UNITS[unit])
    if size > 2 ** 60:
        raise ValueError(f"{value!r} is larger than any disk")
    return FreeSpaceFloor(text, bytes=size) if size else None


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
    # ---- delivery windows ----
    windows: dict[str, DeliveryWindow] = field(default_factory=dict)  # by name (rulesengine/windows.py)
    # ----
    retention: Retention = Retention()  # how long what the router is done with is kept
    storage_min_free: FreeSpaceFloor | None = None  # None: instances are taken until the disk is full
    notifiers: dict[str, Notifier] = field(default_factory=dict)  # notifications: by name
    notify: tuple[Subscription, ...] = ()  # which events go to which notifiers
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
    if validator == "anyOf" and error.schema.get("description"):  # a duration, a size: its description says how
        return f"{where}: {value!r} is not valid: {error.schema['description']}"
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
        except ValueError:  # open() refuses a name with a NUL character
            return None, "hash_key_file", f"{key_path!r} is not a file name"
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
        windows=_windows(data),
        retention=_retention(data.get("retention")), storage_min_free=parse_free_space(data.get("storage_min_free", 0)),
        notifiers=_notifiers(data.get("notifiers"), base), notify=_subscriptions(data.get("notify")),
    )


def _windows(data: dict) -> dict[str, DeliveryWindow]:
    """The delivery windows, by name (checked already: _Checks._windows)."""
    return {str(name): DeliveryWindow.parse(str(name), item["hours"], item.get("days"), item.get("timezone"))
            for name, item in (data.get("windows") or {}).items()}


def _retention(data) -> Retention:
    """The `retention` mapping (checked by _Checks._retention), in seconds."""
    data = data or {}
    return Retention(delivered=parse_duration(data.get("delivered", 0)),
                     **{kind: parse_duration(data[kind]) if kind in data else None
                        for kind in ("quarantine", "done", "failed")})


def _notifiers(data, base: str) -> dict[str, Notifier]:
    notifiers: dict[str, Notifier] = {}
    for name, item in (data or {}).items():
        values = {str(k): v for k, v in dict(item).items() if k != "type"}
        for key in ("body", "subject"):
            if key in values:
                values[key] = str(values[key])
        values["retry"] = _retry(values.get("retry"))
        values["ca_certificates"] = _resolve(base, values.get("ca_certificates"))
        if "timeout" in values:
            values["timeout"] = float(values["timeout"])
        if item["type"] == "webhook":
            values["url"] = str(values["url"])
            values["headers"] = {str(header): SecretHeader(value.get("value_env"), _resolve(base, value.get("value_file")))
                                 if isinstance(value, dict) else str(value)
                                 for header, value in (values.get("headers") or {}).items()}
            notifiers[str(name)] = WebhookNotifier(name=str(name), **values)
        else:
            values = _whole(values, "port")
            values["sender"] = str(values.pop("from"))
            values["to"] = tuple(str(address) for address in values["to"])
            values["password_file"] = _resolve(base, values.get("password_file"))
            notifiers[str(name)] = EmailNotifier(name=str(name), **values)
    return notifiers


def _subscriptions(data) -> tuple[Subscription, ...]:
    return tuple(Subscription(str(item["event"]), tuple(str(name) for name in item["to"]),
                              duration_seconds(item.get("after", 0))) for item in data or ())


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
        self._finite(self.data, ())
        self._unique()
        self._durations()
        self._naming()
        self._worklists()
        self._secrets()
        self._journal()
        self._log()
        self._console()
        self._windows()
        self._retention()
        self._notifications()
        return self.found

    def _finite(self, node, location: tuple) -> None:
        """YAML's .nan and .inf pass every bound of the schema (NaN compares false): refuse them."""
        if isinstance(node, float) and not math.isfinite(node):
            self._problem(location, f"must be a finite number, not {node}")
        elif isinstance(node, dict):
            for key, value in node.items():
                self._finite(value, location + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                self._finite(value, location + (index,))

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


    def _retention(self) -> None:
        """Durations and the free-space floor: what the schema's patterns cannot say (too long,
        a percentage past 100%, a cleanup that would empty a folder at every round)."""
        for kind in ("delivered", "quarantine", "done", "failed"):
            value = self._value("retention", kind, kind=(int, str))
            if value is None:
                continue
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                self._problem(("retention", kind), str(exc))
                continue
            if seconds == 0 and kind != "delivered":
                self._problem(("retention", kind), f"0 would remove every file of {kind} at each cleanup; leave "
                                                   "the key out to keep them for ever, or give a duration (7d)")
        floor = self._value("storage_min_free", kind=(int, str))
        if floor is not None:
            try:
                parse_free_space(floor)
            except ValueError as exc:
                self._problem(("storage_min_free",), str(exc))

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


    # ---- delivery windows ----
    def _windows(self) -> None:
        """Each window's hours, days and time zone can be used; a destination's window is one
        of them."""
        windows = self._value("windows", kind=dict) or {}
        for name, item in windows.items():
            if not isinstance(item, dict):
                continue
            for key, check in (("hours", lambda v: DeliveryWindow.parse(str(name), v)),
                               ("days", lambda v: DeliveryWindow.parse(str(name), "00:00-01:00", v)),
                               ("timezone", lambda v: DeliveryWindow.parse(str(name), "00:00-01:00", None, v))):
                value = self._value("windows", name, key, kind=(str, list))
                if value is None or (key == "days" and value):  # a day misspelt: the schema said so
                    continue
                try:
                    check(value)
                except WindowError as exc:
                    self._problem(("windows", name, key), str(exc))
        for name, item in (self._value("destinations", kind=dict) or {}).items():
            window = self._value("destinations", name, "window") if isinstance(item, dict) else None
            if window is not None and window not in windows:
                known = ", ".join(sorted(map(str, windows))) or "none are configured"
                close = difflib.get_close_matches(window, [str(w) for w in windows], n=1)
                hint = f"did you mean {close[0]}?" if close else f"windows: {known}"
                self._problem(("destinations", name, "window"), f"unknown window {window!r} ({hint})")

    # ---- notifications ------------------------------------------------------------------

    def _notifications(self) -> None:
        """Notifiers: http(s) addresses without credentials, secrets that can be read, templates
        that compile in the sandbox, name only what events give and render (a JSON body to
        JSON); subscriptions: notifiers that exist, `after` where it means something."""
        notifiers = self._value("notifiers", kind=dict) or {}
        for name, item in notifiers.items():
            kind = self._value("notifiers", name, "type") if isinstance(item, dict) else None
            if kind == "webhook":
                self._webhook(name, item)
            elif kind == "email":
                self._email(name, item)
        for number, item in self._items("notify"):
            event = self._value("notify", number, "event")
            for index, target in enumerate(self._value("notify", number, "to", kind=list) or []):
                if isinstance(target, str) and target not in notifiers:
                    close = difflib.get_close_matches(target, [str(n) for n in notifiers], n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    known = f"notifiers: {', '.join(map(str, notifiers))}" if notifiers else "no notifiers are configured"
                    self._problem(("notify", number, "to", index), f"unknown notifier {target!r}{hint}; {known}")
            if event in DISK_EVENTS and not self.data.get("storage_min_free"):
                self._problem(("notify", number, "event"), f"{event} is raised only with storage_min_free, which "
                                                           "is not set: set it (e.g. storage_min_free: 5%)")
            if "after" in item and event is not None and event not in EVENTS_WITH_AFTER:
                self._problem(("notify", number, "after"), f"after applies to {', '.join(EVENTS_WITH_AFTER)} only, "
                                                           f"not to {event}")

    def _webhook(self, name, item: dict) -> None:
        from urllib.parse import urlsplit
        url = self._value("notifiers", name, "url")
        if url is not None:
            try:
                parts = urlsplit(url)
                parts.port
            except ValueError as exc:
                self._problem(("notifiers", name, "url"), f"not a valid address: {exc}")
            else:
                if parts.scheme not in ("http", "https"):
                    self._problem(("notifiers", name, "url"), f"{url!r}: only http:// and https:// addresses are "
                                                              "posted to")
                elif not parts.hostname:
                    self._problem(("notifiers", name, "url"), f"{url!r} names no host")
                elif parts.username is not None or parts.password is not None:
                    self._problem(("notifiers", name, "url"), "the address holds credentials: give them in a header "
                                                              "read from value_env or value_file")
        headers = self._value("notifiers", name, "headers", kind=dict) or {}
        for header, value in headers.items():
            if isinstance(value, dict) and self.secrets:
                secret = SecretHeader(value.get("value_env"), _resolve(self.base, value.get("value_file")))
                if secret.value_env is None and secret.value_file is None:
                    continue
                try:
                    text = secret.read()
                except ValueError as exc:
                    key, problem = str(exc).split(": ", 1)
                    self._problem(("notifiers", name, "headers", header, key), problem)
                    continue
                if "\r" in text or "\n" in text:
                    self._problem(("notifiers", name, "headers", header), "the secret value holds a line break")
        self._ca_certificates(name)
        self._template(name, "body", "json")

    def _email(self, name, item: dict) -> None:
        sources = [key for key in ("password_file", "password_env") if key in item]
        if len(sources) == 2:
            self._problem(("notifiers", name, "password_env"), "password_file and password_env both name the "
                                                               "password; keep one")
        elif sources and "username" not in item:
            self._problem(("notifiers", name, sources[0]), "a password without a username: set username too")
        elif "username" in item and not sources:
            self._problem(("notifiers", name, "username"), "a username without a password: set password_file or "
                                                           "password_env")
        elif sources and self._value("notifiers", name, "tls") == "none":
            self._problem(("notifiers", name, "tls"), "a password is never sent without TLS: set tls: starttls or "
                                                      "implicit")
        elif sources and self.secrets:
            env = self._value("notifiers", name, "password_env")
            file = _resolve(self.base, self._value("notifiers", name, "password_file"))
            try:
                read_secret(env, file, "password_env", "password_file")
            except ValueError as exc:
                self._problem(("notifiers", name, sources[0]), str(exc).split(": ", 1)[1])
        self._ca_certificates(name)
        self._template(name, "subject", "text")
        self._template(name, "body", "text")

    def _ca_certificates(self, name) -> None:
        path = self._value("notifiers", name, "ca_certificates")
        if path is not None and not os.path.isfile(_resolve(self.base, path)):
            self._problem(("notifiers", name, "ca_certificates"), f"{_resolve(self.base, path)} is not a file")

    def _template(self, name, key: str, kind: str) -> None:
        from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

        from .notification_context import PATIENT_FIELDS, known_fields, path_fields, sample, unknown_field
        from .notification_templates import TemplateProblem, check_template
        source = self._value("notifiers", name, key)
        if source is None:
            return
        patient = self.data["notifiers"][name].get("patient_data") is True
        refused = {} if patient else {field: "patient data: set patient_data: true on the notifier to give it"
                                      for field in PATIENT_FIELDS}
        try:
            check_template(str(source), kind, known_fields(patient), sample(patient), refused, path_fields(patient),
                           lambda root, field: unknown_field(root, field, patient))
        except TemplateProblem as exc:
            line = _line_of(self.data, ["notifiers", name, key])
            if line and exc.line:  # the template's own line, in the file: a block scalar starts below its key
                block = isinstance(source, (LiteralScalarString, FoldedScalarString))
                line += exc.line if block else exc.line - 1
            location = ("notifiers", name, key)
            where = f"{self.path}:{line}: {_where(location)}" if line else f"{self.path}: {_where(location)}"
            self.found.append(_Problem(line or 0, f"{where}: {exc}"))


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



def notifiers_from_config(path: str | os.PathLike) -> frozenset[str]:
    """The names of the configuration's notifiers: what `lint --config` checks `notify` against."""
    return frozenset(load_config(path, secrets=False).notifiers)


def windows_from_config(path: str | os.PathLike) -> frozenset[str]:
    """The names of the configuration's delivery windows: what `lint --config` checks
    `route to NAME during WINDOW` against."""
    return frozenset(load_config(path, secrets=False).windows)
