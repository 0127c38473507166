"""Whole-file lint passes over an Analysis: unreachable, shadowed, fall-through, loops."""

from __future__ import annotations

from .checks import Analysis


def lint_program(analysis: Analysis) -> None:
    pass
