"""Reads a rule file with everything it imports and the CSV tables it declares.

The result, a Program, is what the checks and the compiler work on. Every file
that went into it is listed (for hot reload) and hashed into a version.

A rule file reads only inside the rules folders: the folder of the main rule
file and those the configuration lists (`rules_folders`). An import or a table
that leads elsewhere (an absolute path, `..`, a symbolic link) is an error at
the statement that names it, and nothing is read: whoever may edit rules must
not be able to read, through lint or reload errors, what else the router can.
For the same reason an import must be a rule file (*.rules) and a table a CSV
file (*.csv): another file is never parsed, so never quoted in a finding.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Sequence

from ..diagnostics import Diagnostic, RulesError, Span, error
from . import nodes as n
from .syntax import parse

RULE_FILE_SUFFIX = ".rules"
TABLE_SUFFIX = ".csv"


@dataclass
class TableData:
    name: str
    path: str
    key: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, str]]

    def value_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c != self.key)


@dataclass
class Module:
    """One parsed rule file and the names it defines."""

    path: str
    file: n.RuleFile
    imports: dict[str, "Module"] = field(default_factory=dict)
    tables: dict[str, TableData] = field(default_factory=dict)
    blocks: dict[str, n.Block] = field(default_factory=dict)
    constants: dict[str, n.Const] = field(default_factory=dict)
    failed_imports: set[str] = field(default_factory=set)  # aliases of imports that could not be loaded
    failed_tables: set[str] = field(default_factory=set)  # tables that could not be read: reported once, at `table`


@dataclass
class Program:
    main: Module
    modules: list[Module]
    files: list[str]  # every file read: rule files and tables
    digest: str
    diagnostics: list[Diagnostic]
    sources: dict[str, bytes] = field(default_factory=dict)  # what each file held when it was read

    @property
    def version(self) -> str:
        return self.digest[:12]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


def display_path(path: str) -> str:
    """Paths in findings are shown relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Loader:
    def __init__(self, folders: Sequence[str], sources: dict[str, bytes] | None = None):
        self.folders = list(dict.fromkeys(os.path.realpath(folder) for folder in folders))
        self.given = sources  # read files from here instead of the disk (a version recorded earlier)
        self.sources: dict[str, bytes] = {}
        self.modules: dict[str, Module] = {}
        self.failed: set[str] = set()  # files that could not be read or parsed: reported once
        self.order: list[Module] = []
        self.files: list[str] = []
        self.hasher = hashlib.sha256()
        self.diagnostics: list[Diagnostic] = []

    def _read(self, path: str, span: Span | None, what: str) -> str | None:
        try:
            if self.given is not None:
                if path not in self.given:
                    raise FileNotFoundError(2, "not among the files recorded with this version")
                data = self.given[path]
            else:
                with open(path, "rb") as fh:
                    data = fh.read()
        except OSError as exc:
            self.diagnostics.append(error("import" if what != "table" else "table",
                                          f"cannot read {what} {display_path(path)}: {exc.strerror or exc}", span))
            return None
        self.files.append(path)
        self.sources[path] = data
        self.hasher.update(path.encode() + b"\0" + data + b"\0")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            before = data[:exc.start]
            line = before.count(b"\n") + 1
            column = exc.start - (before.rfind(b"\n") + 1) + 1
            if what == "table":  # point at the table statement: a finding quotes only rule files
                where, place = span, f" at line {line}, column {column}"
            else:
                where, place = Span.point(display_path(path), line, column), ""
            self.diagnostics.append(error("encoding", f"{display_path(path)} is not UTF-8 text: byte "
                                          f"0x{data[exc.start]:02X}{place} cannot be read", where,
                                          "save the file as UTF-8"))
            return None

    def _allowed(self, item: n.Import | n.Table, target: str, what: str, suffix: str) -> bool:
        """Is `target` a file of the right kind inside the rules folders? If not, say why, at the
        file name in the statement, without reading it."""
        where = item.file_span or item.span
        real = os.path.realpath(target)
        if not any(_within(real, folder) for folder in self.folders):
            unlinked = os.path.join(os.path.realpath(os.path.dirname(target)), os.path.basename(target))
            if any(_within(unlinked, folder) for folder in self.folders):
                why = "it is a symbolic link to a file outside the rules folder"
            else:
                why = "it is outside the rules folder"
            folders = ", ".join(display_path(folder).rstrip(os.sep) + os.sep for folder in self.folders)
            self.diagnostics.append(error(
                "import" if what == "import" else "table", f"cannot {what} {item.file!r}: {why}", where,
                f"only files inside {folders} are read; the configuration's rules_folders can add folders"))
            return False
        if not (target.lower().endswith(suffix) and real.lower().endswith(suffix)):
            kind = "a rule file (*.rules)" if what == "import" else "a CSV file (*.csv)"
            self.diagnostics.append(error(
                "import" if what == "import" else "table",
                f"cannot {what} {item.file!r}: {'an import' if what == 'import' else 'a table'} is {kind}", where))
            return False
        return True

    def load(self, path: str, text: str | None = None, span: Span | None = None,
             stack: tuple[str, ...] = ()) -> Module | None:
        key = os.path.abspath(path)
        if key in stack:
            cycle = " -> ".join(display_path(p) for p in stack[stack.index(key):] + (key,))
            self.diagnostics.append(error("import", f"imports form a cycle: {cycle}", span))
            return None
        if key in self.modules:
            return self.modules[key]
        if key in self.failed:
            return None
        shown = display_path(path)
        if text is None:
            text = self._read(path, span, "rule file")
            if text is None:
                self.failed.add(key)
                return None
        else:
            self.hasher.update(key.encode() + b"\0" + text.encode() + b"\0")
        try:
            rule_file = parse(text, shown)
        except RulesError as exc:
            self.diagnostics.extend(exc.diagnostics)
            self.failed.add(key)
            return None
        constants = {item.name.value: item for item in rule_file.items if isinstance(item, n.Const)}
        if constants:
            rule_file = with_constants(rule_file, {name: item.value for name, item in constants.items()})
        module = Module(shown, rule_file)
        self.modules[key] = module
        base = os.path.dirname(path)
        for item in rule_file.items:
            if isinstance(item, n.Import):
                self._import(module, item, base, stack + (key,))
            elif isinstance(item, n.Table):
                self._table(module, item, base)
            elif isinstance(item, n.Block):
                self._define(module, module.blocks, item.name, item)
            elif isinstance(item, n.Const):
                self._define(module, module.constants, item.name, item)
        self.order.append(module)
        return module

    def _define(self, module: Module, namespace: dict, name: n.Name, value) -> None:
        taken = (name.value in module.imports or name.value in module.tables or name.value in module.blocks
                 or name.value in module.constants)
        if taken:
            self.diagnostics.append(error("duplicate-name", f"{name.value!r} is defined twice in this file", name.span))
            return
        namespace[name.value] = value

    def _import(self, module: Module, item: n.Import, base: str, stack: tuple[str, ...]) -> None:
        target = os.path.normpath(os.path.join(base, item.file))
        if not self._allowed(item, target, "import", RULE_FILE_SUFFIX):
            module.failed_imports.add(item.alias.value)
            return
        imported = self.load(target, span=item.span, stack=stack)
        if imported is None:
            module.failed_imports.add(item.alias.value)  # its error is reported; uses of it are not
            return
        if imported.file.rules:
            rule = imported.file.rules[0]
            self.diagnostics.append(error(
                "import", f"{imported.path} has rules; an imported file provides blocks and tables only",
                item.span, f"its rule {rule.name!r} (line {rule.span.line}) would never run"))
        self._define(module, module.imports, item.alias, imported)

    def _table(self, module: Module, item: n.Table, base: str) -> None:
        target = os.path.normpath(os.path.join(base, item.file))
        table = None
        if self._allowed(item, target, "read table", TABLE_SUFFIX):
            reported = len(self.diagnostics)
            text = self._read(target, item.span, "table")
            if text is None:
                self._suggest_table_file(target, reported)
            else:
                table = read_table(item, target, text, self.diagnostics)
        if table is not None:
            self._define(module, module.tables, item.name, table)
        elif item.name.value not in module.tables:
            # The `table` finding says what is wrong; every use of the name would only repeat it.
            module.failed_tables.add(item.name.value)

    def _suggest_table_file(self, target: str, reported: int) -> None:
        """A table file that is not there: name the closest CSV file of its folder, if any."""
        folder, name = os.path.split(target)
        if self.given is not None:
            present = [os.path.basename(p) for p in self.given if os.path.dirname(p) == folder]
        else:
            try:
                present = os.listdir(folder or os.curdir)
            except OSError:
                return
        candidates = [p for p in present if p.lower().endswith(TABLE_SUFFIX) and p != name]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        if close and len(self.diagnostics) > reported and self.diagnostics[-1].hint is None:
            self.diagnostics[-1] = dataclasses.replace(self.diagnostics[-1], hint=f'did you mean "{close[0]}"?')


# Fields that name what an action edits or a test examines: a constant is a value, never that.
_TARGET_FIELDS = {"target"}


def with_constants(rule_file: n.RuleFile, constants: dict[str, n.Expr]) -> n.RuleFile:
    """`rule_file` with every variable that names one of its constants replaced by a ConstRef
    holding the constant's literal. Rebuilt bottom-up without recursion: an `else if` chain can
    be thousands long."""
    rebuilt: dict[int, n.Node] = {}
    pending: list[tuple[n.Node, bool]] = [(item, False) for item in rule_file.items]
    while pending:
        node, children_done = pending.pop()
        if not children_done:
            pending.append((node, True))
            pending.extend((child, False) for child in node.children())
            continue
        if isinstance(node, n.Variable) and node.name in constants:
            rebuilt[id(node)] = n.ConstRef(node.span, node.name, constants[node.name])
            continue
        changes = {}
        for f in dataclasses.fields(node):
            if f.name in _TARGET_FIELDS:
                continue
            value = getattr(node, f.name)
            if isinstance(value, n.Node) and id(value) in rebuilt:
                changes[f.name] = rebuilt[id(value)]
            elif isinstance(value, tuple) and any(id(v) in rebuilt for v in value if isinstance(v, n.Node)):
                changes[f.name] = tuple(rebuilt.get(id(v), v) if isinstance(v, n.Node) else v for v in value)
        if changes:
            rebuilt[id(node)] = dataclasses.replace(node, **changes)
    items = tuple(rebuilt.get(id(item), item) for item in rule_file.items)
    return dataclasses.replace(rule_file, items=items)


def read_table(item: n.Table, path: str, text: str, diagnostics: list[Diagnostic]) -> TableData | None:
    """A CSV table with a header row; the key column names each row."""
    shown = display_path(path)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:  # e.g. a field larger than the csv module's limit
        diagnostics.append(error("table", f"table {shown} cannot be read as CSV: {exc}", item.span))
        return None
    if not rows or not any(cell.strip() for cell in rows[0]):
        diagnostics.append(error("table", f"table {shown} is empty: it needs a header row", item.span))
        return None
    header = tuple(cell.strip() for cell in rows[0])
    key = item.key or header[0]
    if key not in header:
        diagnostics.append(error("table", f"table {shown} has no column {key!r} (its columns: {', '.join(header)})",
                                 item.span))
        return None
    key_index = header.index(key)
    data: dict[str, dict[str, str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            diagnostics.append(error("table", f"{shown}:{number}: {len(row)} fields where the header has "
                                     f"{len(header)}", item.span))
            continue
        value = row[key_index].strip()
        if value in data:
            diagnostics.append(error("table", f"{shown}:{number}: key {value!r} appears twice", item.span))
            continue
        data[value] = {h: cell.strip() for h, cell in zip(header, row)}
    return TableData(item.name.value, shown, key, header, data)


def load_program(path: str | None = None, text: str | None = None, filename: str = "<rules>",
                 folders: Sequence[str] = (), sources: dict[str, bytes] | None = None) -> Program:
    """Load a rule file from `path`, or from `text` (imports resolve against `filename`'s folder).

    Imports and tables are read only inside the main file's folder and `folders`. With
    `sources` (a Program's `sources`, kept from an earlier load), files are read from there
    and not from the disk: the same version again, whatever the files hold now."""
    main_folder = os.path.dirname(os.path.abspath(path if path is not None else filename))
    loader = _Loader([main_folder, *folders], sources)
    main = loader.load(path if path is not None else filename, text=text)
    if main is None:
        empty = n.RuleFile(display_path(path or filename), text or "", ())
        main = Module(display_path(path or filename), empty)
    return Program(main, loader.order or [main], loader.files, loader.hasher.hexdigest(), loader.diagnostics,
                   loader.sources)
