"""The rule set the router runs, swapped whole when the rule files change."""

from __future__ import annotations

import logging
import threading

from ..config import Config
from ..diagnostics import RulesError, SourceCache, render_text
from ..lang.api import compile_file
from ..lang.ruleset import RuleSet

log = logging.getLogger("rulesengine.rules")


class RulesHolder:
    """`current` is always a complete, compiled rule set: a new one is compiled aside and
    replaces the old in one assignment, between documents; one that fails to compile
    never replaces a good one."""

    def __init__(self, config: Config, announce: bool = True):
        self.config = config
        self.announce = announce  # of two processes, one tells the log about reloads
        self._lock = threading.Lock()
        self.current: RuleSet = self._compile(config)

    @staticmethod
    def _compile(config: Config) -> RuleSet:
        return compile_file(config.rules, config.destination_infos(), secrets=config.secrets,
                            no_destination=config.no_destination, folders=config.rules_folders)

    def reload(self, config: Config | None = None) -> bool:
        """Compile the rules (with a new configuration's destinations, if given) and swap them in.
        Returns True when the new rules are in place; logs the findings when they are not."""
        with self._lock:
            config = config or self.config
            try:
                ruleset = self._compile(config)
            except RulesError as exc:
                if not self.announce:
                    return False
                findings = render_text([d for d in exc.diagnostics if d.is_error], SourceCache())
                log.error("the changed rules do not compile; the running rules (version %s) stay in place:\n%s",
                          self.current.version, findings)
                return False
            except OSError as exc:
                log.error("cannot read the rules: %s; the running rules (version %s) stay in place",
                          exc, self.current.version)
                return False
            self.config = config
            changed = ruleset.version != self.current.version
            self.current = ruleset
            if changed and self.announce:
                log.info("rules reloaded: version %s", ruleset.version)
            return True
