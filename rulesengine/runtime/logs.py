"""Logging of the router's processes: the same format, level and file in both."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, verbose: int = 0, log_file: str | None = None) -> None:
    """`verbose`: 1 shows the router's own debug lines (each delivery), 2 pynetdicom's too."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))  # appends: both processes share it
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=handlers, force=True,
                        format=FORMAT)
    if verbose:
        logging.getLogger("rulesengine").setLevel(logging.DEBUG)
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    # watchdog's debug lines are about its own threads, and one per file event: never wanted here
    logging.getLogger("watchdog").setLevel(logging.WARNING)
