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

from jsonschema import Draft202012Validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..lang.functions import DEFAULT_HASH_KEY, Secrets


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
    max_associations: int = 32
    max_pdu: int = 131072
    timeouts: Timeouts = Timeouts()
    tls: TLS | None = None


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
    type: str = "dicom"


@dataclass(frozen=True)
class FolderDestination:
    name: str
    path: str
    naming: str = "{SOPInstanceUID}.dcm"
    retry: Retry = Retry()
    type: str = "folder"


Destination = DicomDestination | FolderDestination


@dataclass(frozen=True)
class Config:
    path: str
    storage: str
    rules: str
    no_destination: str = "quarantine"
    secrets: Secrets = Secrets()
    development_key: bool = True
    log_level: str = "info"
    log_file: str | None = None
    listeners: tuple[Listener, ...] = ()
    watch: tuple[Watch, ...] = ()
    destinations: dict[str, Destination] = field(default_factory=dict)

    def destination_infos(self) -> dict[str, dict]:
        """What the rules compiler needs to know of each destination."""
        return {name: {"ae_title": getattr(d, "ae_title", None), "host": getattr(d, "host", None),
                       "port": getattr(d, "port", None)} for name, d in self.destinations.items()}


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
    if validator in ("minLength", "maxLength"):
        return f"{where}: {value!r} is too {'short' if validator == 'minLength' else 'long'}"
    if validator in ("pattern", "propertyNames"):
        description = error.schema.get("description")
        return f"{where}: {value!r} is not valid" + (f": {description}" if description else "")
    return f"{where}: {error.message}"


def _is_key_of(data, location, name) -> bool:
    """Is `name` a key of the mapping at `location` (a propertyNames error names a key)?"""
    node = data
    for part in location:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict) and isinstance(name, str) and name in node


def validate(data, path: str) -> list[str]:
    """Problems with the configuration, each `FILE:LINE: key: what is wrong`."""
    validator = Draft202012Validator(schema())
    found = []
    for error in validator.iter_errors(data):
        if error.validator in ("if", "allOf"):
            continue  # their sub-errors are reported as they are
        location = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            extras = [k for k in error.instance if k not in known]
            location += extras[:1]  # the line of the (first) unknown key, not of its parent
        elif error.validator == "pattern" and _is_key_of(data, location, error.instance):
            location.append(error.instance)  # propertyNames: the line of the bad name itself
        line = _line_of(data, location)
        found.append((line or 0, f"{path}:{line}: {_plain(error)}" if line else f"{path}: {_plain(error)}"))
    return list(dict.fromkeys(text for _, text in sorted(found)))


def load_config(path: str | os.PathLike, secrets: bool = True) -> Config:
    """Read and check a configuration; with `secrets=False` the hash key is not looked up
    (lint needs the destinations, not the key)."""
    path = os.fspath(path)
    data = _load_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    problems = validate(data, path)
    if problems:
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


def _at(path: str, data, key: str, where: str) -> str:
    """`FILE:LINE: where` for the key `key` of the mapping `data`."""
    line = _line_of(data, [key])
    return f"{path}:{line}: {where}" if line else f"{path}: {where}"


def _whole(values: dict, *keys: str) -> dict:
    """Whole numbers as int: the schema's "integer" also admits 11112.0, which sockets refuse."""
    for key in keys:
        if key in values:
            values[key] = int(values[key])
    return values


def _retry(data) -> Retry:
    return Retry(**_whole(dict(data or {}), "max_attempts"))


def _secrets(data, path: str, base: str) -> tuple[Secrets, bool]:
    data = data or {}
    key = None
    if "hash_key_env" in data:
        name = data["hash_key_env"]
        where = _at(path, data, "hash_key_env", "secrets.hash_key_env")
        if name not in os.environ:
            raise ConfigError(f"{where}: the environment variable {name} is not set")
        key = os.environ[name].encode("utf-8")
        if not key:
            raise ConfigError(f"{where}: the environment variable {name} is empty")
    elif "hash_key_file" in data:
        key_path = _resolve(base, data["hash_key_file"])
        where = _at(path, data, "hash_key_file", "secrets.hash_key_file")
        try:
            with open(key_path, encoding="utf-8") as fh:
                key = fh.readline().strip().encode("utf-8")
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {key_path}: {exc.strerror}") from None
        if not key:
            raise ConfigError(f"{where}: the first line of {key_path} is empty")
    secrets = Secrets(key or DEFAULT_HASH_KEY, str(data.get("uid_root", "2.25")))
    return secrets, key is None


def _build(data, path: str, resolve_secrets: bool = True) -> Config:
    base = os.path.dirname(os.path.abspath(path))
    listeners = []
    for item in data.get("listeners") or []:
        values = _whole(dict(item), "port", "max_associations", "max_pdu")
        values["allowed_calling_aets"] = tuple(values.get("allowed_calling_aets") or ())
        if "transfer_syntaxes" in values:
            values["transfer_syntaxes"] = tuple(values["transfer_syntaxes"])
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
        values["retry"] = _retry(values.get("retry"))
        if item["type"] == "dicom":
            values["timeouts"] = _timeouts(values.get("timeouts"))
            values["tls"] = _tls(values.get("tls"), base)
            destinations[str(name)] = DicomDestination(name=str(name), **values)
        else:
            values["path"] = _resolve(base, values["path"])
            for problem in check_naming(values.get("naming", FolderDestination.naming)):
                line = _line_of(data, ["destinations", name, "naming"])
                raise ConfigError(f"{path}:{line}: destinations.{name}.naming: {problem}")
            destinations[str(name)] = FolderDestination(name=str(name), **values)
    _check_unique(path, data, listeners, watches)
    secrets_data = data.get("secrets") or {}
    if "hash_key_env" in secrets_data and "hash_key_file" in secrets_data:
        raise ConfigError(f"{_at(path, secrets_data, 'hash_key_file', 'secrets')}: hash_key_env and hash_key_file "
                          "both name the hash key; keep one")
    secrets, development = _secrets(data.get("secrets"), path, base) if resolve_secrets else (Secrets(), True)
    log = data.get("log") or {}
    log_file = _resolve(base, log.get("file"))
    if log_file and not os.path.isdir(os.path.dirname(log_file)):
        raise ConfigError(f"{path}:{_line_of(data, ['log', 'file'])}: log.file: the folder "
                          f"{os.path.dirname(log_file)} does not exist")
    return Config(
        path=path, storage=_resolve(base, data["storage"]), rules=_resolve(base, data["rules"]),
        no_destination=str(data.get("no_destination", "quarantine")), secrets=secrets, development_key=development,
        log_level=str(log.get("level", "info")), log_file=log_file,
        listeners=tuple(listeners), watch=tuple(watches), destinations=destinations,
    )


_EVERY_INTERFACE = ("0.0.0.0", "::", "")


def _check_unique(path: str, data, listeners: list[Listener], watches: list[Watch]) -> None:
    """Names are unique across listeners and watched folders; no two listeners share a port
    (an address of every interface conflicts with any other address on that port)."""
    problems = []

    def at(location) -> str:
        line = _line_of(data, location)
        return f"{path}:{line}: {_where(location)}" if line else f"{path}: {_where(location)}"

    named = [(item.name, ["listeners", i, "name"]) for i, item in enumerate(listeners)]
    named += [(item.name, ["watch", i, "name"]) for i, item in enumerate(watches)]
    for number, (name, location) in enumerate(named):
        first = next(loc for other, loc in named[:number + 1] if other == name)
        if first is not location:
            problems.append(f"{at(location)}: the name {name!r} is already used by {_where(first)}; "
                            "listeners and watched folders need names of their own")
    for number, item in enumerate(listeners):
        for index, other in enumerate(listeners[:number]):
            if other.port == item.port and (other.bind == item.bind or other.bind in _EVERY_INTERFACE
                                            or item.bind in _EVERY_INTERFACE):
                problems.append(f"{at(['listeners', number, 'port'])}: port {item.port} on {item.bind} is already "
                                f"used by listeners[{index}] ({other.name}, on {other.bind})")
                break
    if problems:
        raise ConfigError("\n".join(problems), problems)


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

