"""compile_file / compile_source / check_file: the language's front door."""

from __future__ import annotations

import os
from typing import Sequence

from ..diagnostics import Diagnostic, RulesError
from .checks import Analysis
from .compiler import compile_program
from .functions import Secrets
from .lint import lint_program
from .loader import Program, load_program
from .ruleset import NO_DESTINATION_POLICIES, RuleSet


def analyse(program: Program, destinations=None, windows=None, notifiers=None) -> Analysis:
    """Every check and lint pass over a loaded program. `windows`, `notifiers`: the names of the
    configuration's delivery windows and notifiers (None: not known, `during` and `notify`
    names are not checked)."""
    analysis = Analysis(program, destinations, windows, notifiers).run()
    lint_program(analysis)
    return analysis


def check_file(path: str | os.PathLike, destinations=None, folders: Sequence[str] = (),
               windows=None, notifiers=None) -> list[Diagnostic]:
    """Findings for one rule file and what it imports (what `dicom-rules lint` reports).
    Imports and tables are read inside its folder and `folders` only."""
    program = load_program(os.fspath(path), folders=folders)
    return sorted(analyse(program, destinations, windows, notifiers).diagnostics, key=Diagnostic.sort_key)


def _build(program: Program, destinations, secrets, no_destination, windows=None, notifiers=None) -> RuleSet:
    if no_destination not in NO_DESTINATION_POLICIES:
        raise ValueError(f"no_destination must be one of {', '.join(NO_DESTINATION_POLICIES)}")
    analysis = analyse(program, destinations, windows, notifiers)
    if analysis.errors:
        raise RulesError(analysis.diagnostics)
    return compile_program(program, analysis, secrets, no_destination)


def compile_file(path: str | os.PathLike, destinations=None, *, secrets: Secrets | None = None,
                 no_destination: str = "quarantine", folders: Sequence[str] = (), windows=None,
                 notifiers=None) -> RuleSet:
    """Compile a rule file. Raises RulesError (with every finding) when it has errors.

    `destinations`: None (not checked), destination names, or a mapping of name to
    DestinationInfo (or a dict with ae_title, host, port) so that routes back to a
    sender can be recognised. Imports and tables are read inside the rule file's
    folder and `folders` (the configuration's rules_folders) only.
    """
    return _build(load_program(os.fspath(path), folders=folders), destinations, secrets, no_destination, windows,
                  notifiers)


def compile_source(text: str, destinations=None, *, filename: str = "<rules>", secrets: Secrets | None = None,
                   no_destination: str = "quarantine", folders: Sequence[str] = (), windows=None,
                   notifiers=None) -> RuleSet:
    """Compile rules given as text; imports and tables resolve against `filename`'s folder,
    and are read inside it and `folders` only."""
    return _build(load_program(text=text, filename=filename, folders=folders), destinations, secrets,
                  no_destination, windows, notifiers)
