"""The rules the router runs, as the console (a process of its own) can know them: the version
its status row names (else the one the journal recorded last), that version's files as the
journal kept them, how the last reload went, and whether the files on disk still hold that
version. And that version compiled again, for a dry-run of an uploaded file."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from ..config import Config, ConfigError, load_config
from ..diagnostics import RulesError
from ..lang.highlight import lexemes
from ..lang.loader import load_program
from ..lang.ruleset import RuleSet
from ..runtime.journal import Journal
from ..runtime.router_status import is_running
from ..runtime.rules import NoRulesError, RuleSetVersions, RulesUnavailable, compile_rules
from .actions import ActionError


@dataclass
class SourceFile:
    name: str  # relative to the configuration's folder when inside it (file_name), else absolute
    lines: list[dict]  # {"number", "anchor", "segments": [(kind or None, text)]}
    highlighted: bool
    prefix: str = ""  # of its anchors: DISK for a file on disk that differs from the version in use


@dataclass
class RulesInUse:
    version: str | None
    origin: str  # where the version comes from, in words
    router: dict | None  # {"node", "state", "heartbeat", "running"}
    last_reload: dict | None  # {"time", "ok", "findings": [{file, line, column, code, message, anchor}]}
    files: list[SourceFile] = field(default_factory=list)
    disk: dict | None = None  # {"same": bool, "changed": [...], "added": [...], "missing": [...], "error"?}
    disk_files: list[SourceFile] = field(default_factory=list)  # those changed or added, as on disk now

    def to_json(self) -> dict:
        return {"version": self.version, "origin": self.origin, "router": self.router,
                "last_reload": self.last_reload, "disk": self.disk,
                "files": [_file_json(f) for f in self.files], "disk_files": [_file_json(f) for f in self.disk_files]}


def _file_json(file: SourceFile) -> dict:
    return {"name": file.name, "text": "\n".join("".join(text for _, text in line["segments"]) for line in file.lines)}



DISK = "disk:"  # the anchors of the files on disk that differ from the version in use


def file_name(path: str, config: Config) -> str:
    """A rule file as the page names it: relative to the configuration file's folder when
    inside it (as the router names it when it runs there), else its absolute path; a relative
    path is taken as it is."""
    if not os.path.isabs(path):  # as the router named it, from the folder it runs in
        return os.path.normpath(path)
    base = os.path.dirname(os.path.abspath(config.path))
    return os.path.relpath(path, base) if path.startswith(base + os.sep) else path


def anchor(name: str, line: int, prefix: str = "") -> str:
    """The id of a line of the Rules page: `/rules#FILE:LINE` shows it (`disk:FILE:LINE` that
    line of a file on disk that differs from the version in use)."""
    return f"{prefix}{name}:{line}"


def rule_link(path: str | None, line: int | None, config: Config, prefix: str = "") -> str | None:
    """The address of a rule-file line on the Rules page (the trace's rules and edits, the
    Overview's findings): the file named as the page names it."""
    if not path or not isinstance(line, int):
        return None
    return "/rules#" + quote(anchor(file_name(path, config), line, prefix), safe="/:._-")


def _lines(name: str, text: str, prefix: str = "") -> list[dict]:
    return [{"number": number, "anchor": anchor(name, number, prefix), "segments": [(None, line)] if line else []}
            for number, line in enumerate(text.split("\n"), 1)]


def highlighted_lines(name: str, text: str, prefix: str = "") -> list[dict]:
    """Each line of a rule file as (kind, text) segments, a kind for each token of the language
    and None between tokens; the page escapes the text and styles the kinds."""
    lines = _lines(name, text, prefix)
    texts = text.split("\n")
    by_line: dict[int, list] = {}
    for lexeme in lexemes(text):
        by_line.setdefault(lexeme.line, []).append(lexeme)
    for line in lines:
        if line["number"] not in by_line:
            continue
        source = texts[line["number"] - 1]
        segments, at = [], 0
        for lexeme in by_line[line["number"]]:
            start, end = lexeme.column - 1, lexeme.end_column - 1
            if start < at:  # never overlapping; a token the lexer repeated is shown once
                continue
            if start > at:
                segments.append((None, source[at:start]))
            segments.append((lexeme.kind, source[start:end]))
            at = end
        if at < len(source):
            segments.append((None, source[at:]))
        line["segments"] = segments
    return lines


def source_files(sources: dict[str, bytes], config: Config, prefix: str = "") -> list[SourceFile]:
    files = []
    for path, data in sources.items():
        name = file_name(path, config)
        text = data.decode("utf-8-sig", errors="replace")
        rules = path.endswith(".rules")  # a table is shown as it is
        lines = highlighted_lines(name, text, prefix) if rules else _lines(name, text, prefix)
        files.append(SourceFile(name, lines, rules, prefix))
    return files


def _linked(finding: dict, files: list[SourceFile], base: str) -> dict:
    """A finding of the router's with the page's name of its file and the anchor of its line: the
    router names files from its own working directory, which may not be the console's."""
    file, line = finding.get("file"), finding.get("line")
    if file and isinstance(line, int):
        for source in files:
            if source.name == file or os.path.join(base, source.name).endswith(os.sep + file.lstrip(os.sep)) \
                    or file.endswith(os.sep + source.name):
                return {**finding, "name": source.name, "anchor": anchor(source.name, line, source.prefix)}
    return {**finding, "name": file, "anchor": None}


def _compare(in_use: dict[str, bytes], config: Config) -> tuple[dict, dict[str, bytes]]:
    """Whether the configured rule files still hold the version in use; and those that differ, as
    they are on disk."""
    try:
        on_disk = load_program(os.fspath(config.rules), folders=config.rules_folders).sources
    except OSError as exc:
        return {"same": False, "changed": [], "added": [], "missing": [], "error": f"cannot read the rules: {exc}"}, {}
    differ = {path: data for path, data in on_disk.items() if in_use.get(path) != data}
    changed = [file_name(p, config) for p in differ if p in in_use]
    added = [file_name(p, config) for p in differ if p not in in_use]
    missing = [file_name(p, config) for p in in_use if p not in on_disk]
    return {"same": not (differ or missing), "changed": changed, "added": added, "missing": missing}, differ


class RulesOfTheRouter:
    """What the Rules page shows, and the rule set a dry-run evaluates."""

    def __init__(self, config: Config, journal: Journal, clock=time.time):
        self.config = config
        self.journal = journal
        self.clock = clock
        # A dry-run hashes with the router's key when the console can read it (it runs as the
        # router's user), so that its values are the router's; else with the development key.
        try:
            keyed = load_config(config.path, secrets=True)
            self.hash_key_missing = None
        except ConfigError as exc:
            keyed = config
            self.hash_key_missing = str(exc)
        self.keyed_config = keyed
        self.versions = RuleSetVersions(journal, keyed)  # compiles (and keeps) a version from the journal
        self._lock = threading.Lock()

    def _router(self) -> tuple[dict | None, dict | None]:
        statuses = self.journal.statuses()
        if not statuses:
            return None, None
        latest = statuses[0]
        status = latest.status
        running = is_running(latest, self.clock())
        return ({"node": latest.node, "state": status.get("state"), "heartbeat": latest.updated_at,
                 "running": running, "ruleset_version": status.get("ruleset_version")}, status)

    def in_use(self) -> RulesInUse:
        router, status = self._router()
        version = status.get("ruleset_version") if status else None
        if version:
            origin = f"the version the router on {router['node']} " + \
                     ("runs" if router["running"] else "ran last (it is not running now)")
        else:
            version = self.journal.latest_ruleset()
            origin = "no router has reported its status; the version the journal recorded last" if version \
                else "no router has recorded rules in the journal yet: the configured rule files"
        sources = self.journal.ruleset_sources(version) if version else {}
        if version and not sources:
            origin += " (its files are not in the journal: the configured rule files are shown)"
        if not sources:
            try:
                sources = load_program(os.fspath(self.config.rules), folders=self.config.rules_folders).sources
            except OSError:
                sources = {}
        files = source_files(sources, self.config)
        disk, differ = _compare(self.journal.ruleset_sources(version), self.config) \
            if version and sources else (None, {})
        disk_files = source_files(differ, self.config, DISK)
        reload = dict(status["last_reload"]) if status and status.get("last_reload") else None
        if reload is not None:
            # A refused reload's findings are of the files as they were on disk then: those that
            # still differ are shown as they are now, else the line of the version in use.
            base = os.path.dirname(os.path.abspath(self.config.path))
            reload["findings"] = [_linked(finding, disk_files + files, base) for finding in reload.get("findings") or ()]
        return RulesInUse(version, origin, router, reload, files, disk, disk_files)

    def ruleset(self) -> tuple[RuleSet, str]:
        """The rule set a dry-run evaluates, and where it comes from, in words: the version in use,
        compiled from the journal's files of it (as the router compiles a version again); else the
        configured rule files. Raises ActionError when neither compiles."""
        _, status = self._router()
        version = (status or {}).get("ruleset_version") or self.journal.latest_ruleset()
        why = "no rules are recorded in the journal"
        if version:
            try:
                with self._lock:
                    return self.versions.get(version), f"version {version}, in use, compiled from the journal's files"
            except RulesUnavailable as exc:
                why = str(exc)
        try:
            ruleset = compile_rules(self.keyed_config)
        except RulesError as exc:
            first = next((d for d in exc.diagnostics if d.is_error), None)
            raise ActionError(f"the configured rules do not compile ({why}): "
                              f"{first.message if first else exc}", status=409) from None
        except (NoRulesError, OSError) as exc:
            raise ActionError(f"the configured rules cannot be used ({why}): {exc}", status=409) from None
        return ruleset, f"version {ruleset.version}, compiled from the configured rule files ({why})"
