"""rulesengine: a DICOM router driven by a declarative rules language."""

from .diagnostics import Diagnostic, RulesError, Severity, Span
from .arrival import Arrival
from .document import Change, Document, DocumentReadError, Item, PathError
from .lang.api import check_file, compile_file, compile_source
from .lang.checks import DestinationInfo
from .lang.functions import Secrets
from .lang.ruleset import Decision, Edit, RuleSet

__version__ = "0.1.0"

__all__ = [
    "Arrival", "Change", "Decision", "DestinationInfo", "Diagnostic", "Document", "DocumentReadError", "Edit",
    "Item", "PathError", "RuleSet", "RulesError", "Secrets", "Severity", "Span", "check_file", "compile_file",
    "compile_source",
]
