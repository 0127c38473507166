"""docs/configuration.md, rulesengine/config/schema.json and the dataclasses of
rulesengine/config cannot drift apart.

The page's convention: each mapping of the schema has one table, right after a line
`<!-- schema: POINTER -->` where POINTER is the mapping's JSON pointer in schema.json
(`#` for the top level, `#/$defs/listener`, ...). The table's rows are
`| `key` | type | default | meaning |`. The heading above the table names, in
backticks, every path where that mapping appears (`listeners[]`,
`listeners[].timeouts`, `destinations.NAME.timeouts`), so a property path such as
`listeners[].timeouts.acse` is documented as a path of the heading plus a key of
the table. The default column is `required`, `none` (the schema has no default) or
the schema's default as a YAML literal in backticks.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from rulesengine.config import (
    TLS,
    Config,
    Console,
    ConsoleTLS,
    ConsoleUser,
    DicomDestination,
    EmailNotifier,
    FolderDestination,
    Listener,
    Retention,
    Retry,
    Subscription,
    Timeouts,
    Watch,
    WebhookNotifier,
    WorklistDestination,
    load_config,
    schema,
)
from rulesengine.lang.functions import Secrets

from helpers.files import ROOT

PAGE = ROOT / "docs" / "configuration.md"
TEXT = PAGE.read_text(encoding="utf-8")

_MARKER = re.compile(r"^<!-- schema: (\S+) -->$")
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|(.*?)\|(.*?)\|(.*)\|\s*$")
_HEADING = re.compile(r"^#{1,6} ")

# The mappings that only dispatch on `type`; their keys are documented in the tables
# of the mappings they dispatch to.
DISPATCHES = {"#/$defs/destination", "#/$defs/notifier"}


# ---- the schema ------------------------------------------------------------------------


def resolve(pointer: str) -> dict:
    node = schema()
    for part in pointer.lstrip("#").strip("/").split("/"):
        if part:
            node = node[part]
    return node


def _target(prop: dict, pointer: str) -> tuple[dict, str]:
    """A property's schema with its $ref followed, and the pointer of what it is."""
    if "$ref" in prop:
        return resolve(prop["$ref"]), prop["$ref"]
    return prop, pointer


def schema_objects() -> dict[str, set[str]]:
    """Every mapping of the schema: pointer -> the paths where it appears."""
    found: dict[str, set[str]] = {}

    def walk(node: dict, pointer: str, path: str) -> None:
        if "properties" in node:
            found.setdefault(pointer, set()).add(path)
            for key, prop in node["properties"].items():
                target, target_pointer = _target(prop, f"{pointer}/properties/{key}")
                child = f"{path}.{key}" if path else key
                visit(target, target_pointer, child)
        for branch in node.get("allOf", []):
            then = branch.get("then")
            if then and "$ref" in then:
                walk(resolve(then["$ref"]), then["$ref"], path)

    def visit(target: dict, pointer: str, path: str) -> None:
        if target.get("type") == "array" and "$ref" in target.get("items", {}):
            ref = target["items"]["$ref"]
            walk(resolve(ref), ref, f"{path}[]")
        elif isinstance(target.get("additionalProperties"), dict) and "$ref" in target["additionalProperties"]:
            ref = target["additionalProperties"]["$ref"]
            walk(resolve(ref), ref, f"{path}.NAME")
        elif "properties" in target:
            walk(target, pointer, path)

    walk(schema(), "#", "")
    return found


def property_paths() -> set[str]:
    paths = set()
    for pointer, prefixes in schema_objects().items():
        for key in resolve(pointer)["properties"]:
            paths |= {f"{prefix}.{key}" if prefix else key for prefix in prefixes}
    return paths


def type_words(prop: dict) -> str:
    """The type column of a key, in the page's words."""
    if prop.get("$ref") == "#/$defs/ae_title":
        return "AE title"
    if "$ref" in prop:
        return type_words(resolve(prop["$ref"]))
    if "enum" in prop:
        return "one of " + ", ".join(f"`{value}`" for value in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        return " or ".join(type_words(option) for option in prop["anyOf"])
    kind = prop.get("type")
    words = {"string": "text", "integer": "whole number", "number": "number", "boolean": "true or false",
             "object": "mapping"}
    if kind == "array":
        items = prop.get("items", {})
        inner = "mappings" if "$ref" in items and "properties" in resolve(items["$ref"]) else type_words(items)
        return f"list of {inner}"
    return words[kind]


# ---- the page ---------------------------------------------------------------------------


@dataclasses.dataclass
class Table:
    pointer: str
    heading: str
    line: int
    rows: dict[str, tuple[str, str, str]]  # key -> (type, default, meaning)


def page_tables() -> dict[str, Table]:
    lines = TEXT.splitlines()
    tables: dict[str, Table] = {}
    heading = ""
    for number, line in enumerate(lines):
        if _HEADING.match(line):
            heading = line
        marker = _MARKER.match(line.strip())
        if not marker:
            continue
        pointer = marker.group(1)
        assert pointer not in tables, f"docs/configuration.md:{number + 1}: a second table for {pointer}"
        rows: dict[str, tuple[str, str, str]] = {}
        for row in lines[number + 3:]:  # the marker, the header row, the separator row
            if not row.startswith("|"):
                break
            match = _ROW.match(row)
            assert match, f"docs/configuration.md: a row of the table of {pointer} is not `key` | ...: {row}"
            key, kind, default, meaning = (part.strip() for part in match.groups())
            assert key not in rows, f"docs/configuration.md: {key} twice in the table of {pointer}"
            rows[key] = (kind, default, meaning)
        assert rows, f"docs/configuration.md:{number + 1}: no table after the marker of {pointer}"
        tables[pointer] = Table(pointer, heading, number + 1, rows)
    return tables


TABLES = page_tables()
OBJECTS = schema_objects()


def _yaml(text: str):
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


# ---- the page against the schema ---------------------------------------------------------


def test_every_mapping_of_the_schema_has_a_table_and_no_table_is_for_something_else():
    documented = set(TABLES)
    expected = set(OBJECTS) - DISPATCHES
    assert sorted(expected - documented) == [], "mappings of the schema without a table in docs/configuration.md"
    assert sorted(documented - expected) == [], "tables for pointers that are not mappings of the schema"


@pytest.mark.parametrize("pointer", sorted(set(OBJECTS) - DISPATCHES))
def test_a_table_has_exactly_the_keys_of_its_mapping(pointer):
    keys = list(resolve(pointer)["properties"])
    documented = list(TABLES[pointer].rows)
    assert sorted(set(keys) - set(documented)) == [], f"keys of {pointer} missing from its table"
    assert sorted(set(documented) - set(keys)) == [], f"keys in the table of {pointer} that the schema lacks"


@pytest.mark.parametrize("pointer", sorted(DISPATCHES))
def test_the_keys_of_the_dispatching_mapping_are_in_the_tables_it_dispatches_to(pointer):
    dispatch = resolve(pointer)
    targets = [branch["then"]["$ref"] for branch in dispatch["allOf"]]
    assert targets
    for key in dispatch["properties"]:
        for target in targets:
            assert key in TABLES[target].rows, f"{key} of {pointer} missing from the table of {target}"


@pytest.mark.parametrize("pointer", sorted(set(OBJECTS) - DISPATCHES))
def test_the_heading_names_every_path_of_the_mapping(pointer):
    table = TABLES[pointer]
    for path in OBJECTS[pointer]:
        if path:
            assert f"`{path}`" in table.heading, f"the heading of {pointer} ({table.heading!r}) lacks `{path}`"


def test_every_property_path_is_documented():
    documented = set()
    for pointer, table in TABLES.items():
        for prefix in OBJECTS.get(pointer, ()):
            if prefix and f"`{prefix}`" not in table.heading:
                continue
            documented |= {f"{prefix}.{key}" if prefix else key for key in table.rows}
    paths = property_paths()
    assert "listeners[].timeouts.acse" in paths and "destinations.NAME.retry.max_attempts" in paths
    assert sorted(paths - documented) == [], "property paths of the schema not in docs/configuration.md"
    assert sorted(documented - paths) == [], "paths in docs/configuration.md that the schema lacks"


@pytest.mark.parametrize("pointer", sorted(set(OBJECTS) - DISPATCHES))
def test_types_and_defaults_are_the_schemas(pointer):
    mapping = resolve(pointer)
    required = set(mapping.get("required", ()))
    for key, (kind, default, meaning) in TABLES[pointer].rows.items():
        if key not in mapping["properties"]:
            continue  # test_a_table_has_exactly_the_keys_of_its_mapping reports it
        prop = mapping["properties"][key]
        where = f"docs/configuration.md, table of {pointer}, key {key}"
        assert kind == type_words(prop), f"{where}: type {kind!r}, the schema says {type_words(prop)!r}"
        assert meaning, f"{where}: no meaning"
        if key in required:
            assert default == "required", f"{where}: the key is required"
        elif "default" in prop:
            literal = re.fullmatch(r"`([^`]+)`", default)
            assert literal, f"{where}: the default must be the schema's default in backticks, not {default!r}"
            value = _yaml(literal.group(1))
            assert value == prop["default"] and type(value) is type(prop["default"]), \
                f"{where}: the page says {value!r}, the schema {prop['default']!r}"
        else:
            assert default == "none", f"{where}: the schema has no default; the page says {default!r}"


def test_every_key_of_the_schema_has_a_description():
    for pointer in OBJECTS:
        for key, prop in resolve(pointer)["properties"].items():
            target, _ = _target(prop, "")
            assert prop.get("description") or target.get("description"), f"{pointer}: {key} has no description"


def test_the_complete_example_is_a_valid_configuration(tmp_path):
    blocks = re.findall(r"```yaml\n(.*?)```", TEXT, re.DOTALL)
    full = [block for block in blocks if block.lstrip().startswith("# /etc/dicom-router/router.yaml")]
    assert len(full) == 1
    path = tmp_path / "router.yaml"
    path.write_text(full[0], encoding="utf-8")
    config = load_config(path, secrets=False)
    assert {"MAIN_PACS", "ARCHIVE", "RESEARCH"} <= set(config.destinations)
    assert any(listener.tls for listener in config.listeners)
    assert any(listener.association_file for listener in config.listeners)


def test_the_page_names_the_example_configuration():
    assert "examples/router.yaml" in TEXT
    assert (ROOT / "examples" / "router.yaml").is_file()


# ---- the schema against the dataclasses ----------------------------------------------------

# pointer -> key -> (dataclass, field); a key absent here maps to the field of its own name
# in the dataclass of its mapping.
DATACLASSES = {
    "#": Config,
    "#/properties/secrets": Secrets,
    "#/$defs/listener": Listener,
    "#/$defs/timeouts": Timeouts,
    "#/$defs/tls": TLS,
    "#/$defs/watch": Watch,
    "#/$defs/retry": Retry,
    "#/$defs/dicom_destination": DicomDestination,
    "#/$defs/folder_destination": FolderDestination,
    "#/$defs/worklist_destination": WorklistDestination,
    "#/$defs/console": Console,
    "#/$defs/console_tls": ConsoleTLS,
    "#/$defs/console_user": ConsoleUser,
    "#/properties/retention": Retention,
    # notifications
    "#/$defs/webhook_notifier": WebhookNotifier,
    "#/$defs/email_notifier": EmailNotifier,
    "#/$defs/subscription": Subscription,
}
FIELD_OF = {
    ("#/properties/log", "level"): (Config, "log_level"),
    ("#/properties/log", "file"): (Config, "log_file"),
    ("#/$defs/email_notifier", "from"): (EmailNotifier, "sender"),  # `from` is a word of Python
}
# Keys that are not a field of their dataclass: mappings built into other fields, or read
# once (the hash key becomes Secrets.hash_key).
NOT_FIELDS = {
    ("#", "log"), ("#", "secrets"),
    ("#/properties/secrets", "hash_key_env"), ("#/properties/secrets", "hash_key_file"),
    ("#", "journal_password_file"), ("#", "journal_password_env"),  # in Config.journal, with its address
}
# Fields that are not keys: what load_config adds.
NOT_KEYS = {
    Config: {"path", "secrets", "development_key", "log_level", "log_file", "lines"},
    Secrets: {"hash_key"},
    DicomDestination: {"name"},
    FolderDestination: {"name"},
    WorklistDestination: {"name"},
    WebhookNotifier: {"name"},
    EmailNotifier: {"name"},
}


def _field(pointer: str, key: str):
    cls, name = FIELD_OF.get((pointer, key), (DATACLASSES.get(pointer), key))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert name in fields, f"{pointer}: key {key} has no field {cls.__name__}.{name}"
    return cls, fields[name]


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def test_every_mapping_has_a_dataclass():
    assert set(OBJECTS) - DISPATCHES == set(DATACLASSES) | {"#/properties/log"}


@pytest.mark.parametrize("pointer", sorted(set(OBJECTS) - DISPATCHES))
def test_schema_defaults_are_the_dataclass_defaults(pointer):
    mapping = resolve(pointer)
    required = set(mapping.get("required", ()))
    for key, prop in mapping["properties"].items():
        if (pointer, key) in NOT_FIELDS:
            continue
        cls, field = _field(pointer, key)
        default = _default(field)
        where = f"{pointer} {key} / {cls.__name__}.{field.name}"
        if "default" in prop:
            assert default == prop["default"] and type(default) is type(prop["default"]), \
                f"{where}: the schema says {prop['default']!r}, the dataclass {default!r}"
        elif key in required:
            assert default is dataclasses.MISSING or key == "type", f"{where}: required, but the dataclass has a default"
        else:
            assert default is not dataclasses.MISSING, f"{where}: optional, but the dataclass has no default"


@pytest.mark.parametrize("cls", sorted(set(DATACLASSES.values()), key=lambda c: c.__name__))
def test_every_dataclass_field_is_a_key(cls):
    keys = set()
    for pointer, mapped in DATACLASSES.items():
        if mapped is cls:
            keys |= set(resolve(pointer)["properties"])
    keys |= {name for (pointer, _key), (owner, name) in FIELD_OF.items() if owner is cls}
    fields = {f.name for f in dataclasses.fields(cls)}
    assert sorted(fields - keys - NOT_KEYS.get(cls, set())) == [], f"{cls.__name__} fields without a schema key"


def test_what_load_config_applies_when_keys_are_absent_is_the_schema_default(tmp_path):
    """End to end: a configuration that gives only what is required."""
    path = tmp_path / "router.yaml"
    path.write_text("storage: var\nrules: main.rules\n"
                    "listeners: [{name: main, ae_title: ROUTER, port: 11112}]\n"
                    "watch: [{name: inbox, path: inbox}]\n"
                    "destinations:\n"
                    "  PACS: {type: dicom, ae_title: PACS, host: pacs, port: 104}\n"
                    "  FILES: {type: folder, path: files}\n", encoding="utf-8")
    config = load_config(path, secrets=False)
    loaded = {
        "#": config, "#/properties/secrets": config.secrets, "#/$defs/listener": config.listeners[0],
        "#/$defs/timeouts": config.listeners[0].timeouts, "#/$defs/watch": config.watch[0],
        "#/$defs/retry": config.destinations["FILES"].retry, "#/$defs/dicom_destination": config.destinations["PACS"],
        "#/$defs/folder_destination": config.destinations["FILES"],
    }
    for pointer, value in loaded.items():
        for key, prop in resolve(pointer)["properties"].items():
            if "default" in prop:
                assert getattr(value, key) == prop["default"], f"{pointer} {key}"
    log = resolve("#/properties/log")["properties"]
    assert config.log_level == log["level"]["default"]
    assert config.destinations["PACS"].timeouts == Timeouts() and config.destinations["PACS"].retry == Retry()


def test_a_tls_mapping_with_only_what_is_required_gets_the_schema_default(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text("storage: var\nrules: main.rules\nlisteners:\n"
                    "  - {name: main, ae_title: ROUTER, port: 2762, tls: {certificate: c.pem, private_key: k.pem}}\n",
                    encoding="utf-8")
    tls = load_config(path, secrets=False).listeners[0].tls
    default = resolve("#/$defs/tls")["properties"]["require_client_certificate"]["default"]
    assert tls.require_client_certificate is default
    assert tls.ca_certificates is None
    assert Path(tls.certificate) == tmp_path / "c.pem"
