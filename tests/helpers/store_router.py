"""The router of the stress tests with one destination, STORE: its configuration around any
destination, a rule that routes everything there, and its queue as `dicom-rules queue` reports it."""

from __future__ import annotations

from pathlib import Path

from helpers.cli import dicom_rules

ROUTE_TO_STORE = """
rule "everything" {
  then route to STORE
}
"""


def router_config(port: int, destination: str, listener_extra: str = "") -> str:
    return f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}{listener_extra}}}
destinations:
  STORE: {destination}
"""


def queue_command(tmp_path: Path, *args: str) -> str:
    """`dicom-rules queue router.yaml ...`, as an operator runs it."""
    result = dicom_rules("queue", tmp_path / "router.yaml", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def queue_counts(report: str, destination: str = "STORE") -> dict[str, int]:
    """The destination's row of the queue report's table: state -> count."""
    lines = report.splitlines()
    states = lines[0].split()[1:]
    for line in lines[1:]:
        fields = line.split()
        if fields and fields[0] == destination:
            return dict(zip(states, map(int, fields[1:])))
    return {}
