"""Compiling and evaluating a rule source in one call."""

from __future__ import annotations

import rulesengine
from rulesengine import Document


def evaluate(source: str, document: Document | None = None, destinations=None, **values):
    """Compile `source`, build a document from keyword values when none is given, evaluate."""
    ruleset = rulesengine.compile_source(source, destinations)
    if document is None:
        document = Document()
        for path, value in values.items():
            document.set(path.replace("__", "."), value)
    return ruleset.evaluate(document)
