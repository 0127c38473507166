"""A router configuration and its rules checked together, every problem at once: what
`dicom-rules check-config` reports."""

from __future__ import annotations

import os
import re

from ..config import ConfigError, load_config
from ..diagnostics import Diagnostic, Span, error
from .negotiation import AssociationFileError, read_association_file
from .rules import rule_file_findings


def config_findings(path: str) -> list[Diagnostic]:
    """The configuration and its rules, checked together; every problem of the
    configuration at once (the rules only once it can be read)."""
    try:
        config = load_config(path, secrets=False)
    except ConfigError as exc:
        return [_config_finding(path, problem) for problem in exc.problems]
    problems = [] if os.path.isfile(config.rules) else [f"{config.at('rules')}: no such file {config.rules}"]
    for number, listener in enumerate(config.listeners):
        if listener.association_file:
            try:
                read_association_file(listener.association_file)
            except AssociationFileError as exc:
                problems.append(f"{config.at('listeners', number, 'association_file')}: {exc}")
        problems += _missing_files(config, ("listeners", number, "tls"), listener.tls)
    for name, destination in config.destinations.items():
        problems += _missing_files(config, ("destinations", name, "tls"), getattr(destination, "tls", None))
    findings = [_config_finding(path, problem) for problem in problems]
    if os.path.isfile(config.rules):
        findings += rule_file_findings(config)
    return findings


def _config_finding(path: str, problem: str) -> Diagnostic:
    """A problem `PATH:LINE[:COLUMN]: what` of load_config as a finding placed there, so that
    --format json and github carry its file and line like any other finding."""
    place = re.match(r"(\d+)(?::(\d+))?: ", problem[len(path) + 1:]) if problem.startswith(path + ":") else None
    if place is None:
        return error("config", problem)
    span = Span.point(path, int(place[1]), int(place[2] or 1))
    return error("config", problem[len(path) + 1 + place.end():], span)


def _missing_files(config, location: tuple, tls) -> list[str]:
    if tls is None:
        return []
    keys = {"certificate": tls.certificate, "private_key": tls.private_key, "ca_certificates": tls.ca_certificates}
    return [f"{config.at(*location, key)}: no such file {file}" for key, file in keys.items()
            if file and not os.path.isfile(file)]
