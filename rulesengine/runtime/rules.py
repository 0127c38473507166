"""The rule set the router runs, swapped whole when the rule files change; and every version
an instance was answered under, so that it is processed with exactly that one.

The version an instance follows is fixed when the main process answers it (or takes it
from a watched folder): the journal records the version with the instance, and the files
of every version (what they held when they were compiled) in its rulesets tables, before
that version is put in place. Whoever processes the instance, the worker process included,
compiles that version again from the journal if it does not have it: a reload while an
instance waits, or a restart, never changes which rules it follows.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict

from ..config import Config, ConfigError
from ..diagnostics import Diagnostic, RulesError, SourceCache, error, render_text, warning
from ..lang.api import analyse
from ..lang.compiler import compile_program
from ..lang.loader import Program, display_path, load_program
from ..lang.ruleset import RuleSet
from .events import NO_EVENTS, Events
from .journal import Journal, unreachable
from .journal.errors import in_words

log = logging.getLogger("rulesengine.rules")


class NoRulesError(ConfigError):
    """The configuration's rule file has no rules (an empty file, or a library of blocks):
    every instance would end with the no_destination policy. Refused at start and at reload."""

    def __init__(self, config: Config):
        super().__init__(f"{config.path}: rules: {display_path(config.rules)} has no rules: the router would route "
                         f"nothing (a file of blocks is imported by a rule file, not run)")


def compile_rules(config: Config, program: Program | None = None) -> RuleSet:
    """The configuration's rules, compiled with its destinations, secrets and no_destination
    policy, from the files (or from `program`, read already). Raises RulesError with the
    findings, NoRulesError when the rule file has no rules, OSError when it cannot be read."""
    if program is None:
        program = load_program(os.fspath(config.rules), folders=config.rules_folders)
    analysis = analyse(program, config.destination_infos(), config.windows, config.notifiers)
    if analysis.errors:
        raise RulesError(analysis.diagnostics)
    if not program.main.file.rules:
        raise NoRulesError(config)
    return compile_program(program, analysis, config.secrets, config.no_destination)


def rule_file_findings(config: Config) -> list[Diagnostic]:
    """What `check-config` reports of the configuration's rule file: every finding of `lint`
    with the configuration's destinations, and an error when it has no rules."""
    program = load_program(os.fspath(config.rules), folders=config.rules_folders)
    analysis = analyse(program, config.destination_infos(), config.windows, config.notifiers)
    findings = sorted(analysis.diagnostics, key=Diagnostic.sort_key)
    if not analysis.errors and not program.main.file.rules:
        findings.append(error("config", str(NoRulesError(config))))
    findings += _sync_listener_findings(config, program)
    return findings


def _sync_listener_findings(config: Config, program: Program) -> list[Diagnostic]:
    """Group rules with a sync-mode listener: what it receives and its instance rules route is
    sent before its sender is answered, and its file is gone then; it joins no group."""
    groups = [rule for rule in program.main.file.rules if rule.is_group]
    sync = [listener.name for listener in config.listeners if listener.mode == "sync"]
    if not groups or not sync:
        return []
    names = ", ".join(repr(name) for name in sync)
    return [warning("group-sync-listener",
                    f"group rule {groups[0].name!r}: the sync-mode listener(s) {names} deliver what the instance "
                    "rules route before answering, and those instances join no group; only those the instance "
                    "rules route nowhere are held for the group rules", groups[0].span,
                    "receive in async mode what the group rules must see")]


class RulesHolder:
    """`current` is always a complete, compiled rule set: a new one is compiled aside and
    replaces the old in one assignment, between documents; one that fails to compile, or
    has no rules, never replaces a good one. With a `journal`, each rule set is recorded
    there, with its files, before it is put in place. `program`: the rules parsed already
    (a receiving process starts with the main process's, not with the files on disk)."""

    def __init__(self, config: Config, journal: Journal | None = None, program: Program | None = None):
        self.config = config
        self.journal: Journal | None = None
        self._lock = threading.Lock()
        self.current: RuleSet = compile_rules(config, program)
        # The last reload: {"time", "ok", "findings": [{file, line, column, code, message}]};
        # None before any. The router's status tells it (router_status.py).
        self.last_reload: dict | None = None
        self.events: Events = NO_EVENTS  # a reload refused (events.py): the router's, in the main process
        if journal is not None:
            self.record_in(journal)

    def record_in(self, journal: Journal) -> None:
        """From now on, record each rule set in this journal (the current one at once)."""
        with self._lock:
            self.journal = journal
            self._record(self.current)

    def _record(self, ruleset: RuleSet) -> None:
        if self.journal is not None:
            self.journal.record_ruleset(ruleset.version, ruleset.program.sources)

    def reload(self, config: Config | None = None) -> bool:
        """Compile the rules (with a new configuration's destinations, if given) and swap them in.
        Returns True when the new rules are in place; logs why when they are not."""
        with self._lock:
            config = config or self.config
            try:
                ruleset = compile_rules(config)
            except RulesError as exc:
                errors = [d for d in exc.diagnostics if d.is_error]
                findings = render_text(errors, SourceCache())
                log.error("the changed rules do not compile; the running rules (version %s) stay in place:\n%s",
                          self.current.version, findings)
                self.note_reload(False, [reload_finding(d.code, d.message, d.span) for d in errors or exc.diagnostics])
                return False
            except NoRulesError as exc:
                log.error("%s; the running rules (version %s) stay in place", exc, self.current.version)
                self.note_reload(False, [reload_finding("rules", str(exc))])
                return False
            except OSError as exc:
                log.error("cannot read the rules: %s; the running rules (version %s) stay in place",
                          exc, self.current.version)
                self.note_reload(False, [reload_finding("rules", f"cannot read the rules: {exc}")])
                return False
            self._record(ruleset)  # in the journal before any instance can be answered under it
            self.config = config
            changed = ruleset.version != self.current.version
            self.current = ruleset
            if changed:
                log.info("rules reloaded: version %s", ruleset.version)
            self.note_reload(True, [])
            return True

    def follow(self, config: Config, program: Program) -> RuleSet:
        """Put in place the rules another process put in place (it compiled and recorded them):
        compiled here from its parsed `program`, with its `config`. Raises as compile_rules."""
        ruleset = compile_rules(config, program)
        with self._lock:
            self.config = config
            self.current = ruleset
        return ruleset

    def note_reload(self, ok: bool, findings: list[dict]) -> None:
        """How the last reload went (also one refused before the rules were compiled: a
        configuration that is not valid)."""
        self.last_reload = {"time": time.time(), "ok": ok, "findings": findings}
        if not ok:
            self.events.reload_refused(findings)
        if self.journal is not None:  # counted for metrics; a journal failing costs the count only
            try:
                self.journal.count_reload(ok)
            except Exception as exc:
                if not (isinstance(exc, sqlite3.Error) or unreachable(exc)):
                    raise
                log.warning("the reload could not be counted in the journal: %s", in_words(exc))


def reload_finding(code: str, message: str, span=None) -> dict:
    """A finding of a reload as the router's status shows it."""
    return {"file": span.file if span else None, "line": span.line if span else None,
            "column": span.column if span else None, "code": code, "message": message}


class RulesUnavailable(Exception):
    """The rule set version an instance was answered under cannot be compiled again; the
    message says why (the instance is quarantined with it)."""


class RuleSetVersions:
    """The rule sets by version, for processing: each instance with the version the journal
    recorded at its answer. The rule set running here (`holder`, in the main process) is
    used as it is; any other is compiled from the files the journal kept of it, with the
    configuration in use here (destinations, secrets, no_destination), and a few are kept.
    An instance without a recorded version (released from the quarantine, or journaled
    again from its spool file) follows the latest rules the router put in place."""

    KEEP = 8  # compiled versions kept; a reload every minute needs one or two

    def __init__(self, journal: Journal, config: Config, holder: RulesHolder | None = None):
        self.journal = journal
        self._config = config
        self.holder = holder
        self._compiled: OrderedDict[str, tuple[Config, RuleSet]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def config(self) -> Config:
        return self.holder.config if self.holder is not None else self._config

    def configure(self, config: Config) -> None:
        """A new configuration: versions compiled from now on use it."""
        self._config = config

    def add(self, ruleset: RuleSet) -> None:
        """A version compiled already with the configuration in use (a worker's first rules)."""
        with self._lock:
            self._keep(ruleset.version, self.config, ruleset)

    def get(self, version: str | None) -> RuleSet:
        """The rule set of `version` (None: the latest). Raises RulesUnavailable."""
        holder = self.holder
        if holder is not None and version in (None, holder.current.version):
            return holder.current
        if version is None:
            version = self.journal.latest_ruleset()
            if version is None:
                raise RulesUnavailable("no rules were ever recorded in the journal")
        config = self.config
        with self._lock:
            kept = self._compiled.get(version)
            if kept is not None and kept[0] is config:
                self._compiled.move_to_end(version)
                return kept[1]
            ruleset = self._compile(version, config)
            self._keep(version, config, ruleset)
            return ruleset

    def _keep(self, version: str, config: Config, ruleset: RuleSet) -> None:
        self._compiled[version] = (config, ruleset)
        self._compiled.move_to_end(version)
        while len(self._compiled) > self.KEEP:
            self._compiled.popitem(last=False)

    def _compile(self, version: str, config: Config) -> RuleSet:
        sources = self.journal.ruleset_sources(version)
        if not sources:
            raise RulesUnavailable(f"the rules it was answered under (version {version}) are not in the journal")
        program = load_program(next(iter(sources)), folders=config.rules_folders, sources=sources)
        try:
            ruleset = compile_rules(config, program)
        except RulesError as exc:
            first = next((d for d in exc.diagnostics if d.is_error), None)
            raise RulesUnavailable(f"the rules it was answered under (version {version}) do not compile with the "
                                   f"configuration in use: {first.message if first else exc}") from None
        except NoRulesError as exc:
            raise RulesUnavailable(str(exc)) from None
        if ruleset.version != version:  # the journal's copy differs from what was compiled then
            raise RulesUnavailable(f"the journal's files of rules version {version} compile to version "
                                   f"{ruleset.version}")
        log.info("rules %s compiled again from the journal, for instances answered under them", version)
        return ruleset
