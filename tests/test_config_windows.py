"""Delivery windows in the configuration: `windows:` by name, a destination's `window`, and
every mistake reported with the file, the line and the key; `check-config` and `lint --config`
check the rules' `during` against them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import rulesengine
from rulesengine.config import ConfigError, DicomDestination, FolderDestination, load_config, windows_from_config
from rulesengine.ruletest import load_suite
from rulesengine.runtime.rules import rule_file_findings
from rulesengine.windows import DeliveryWindow

from helpers.cli import dicom_rules

HEAD = "storage: var\nrules: main.rules\nprocesses: 1\n"


def write(folder: Path, body: str, rules: str = 'rule "all" {\n  then route to PACS\n}\n') -> Path:
    (folder / "main.rules").write_text(rules, encoding="utf-8")
    path = folder / "router.yaml"
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return path


def problems(folder: Path, body: str) -> list[str]:
    path = write(folder, body)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return [problem.replace(str(path), "router.yaml") for problem in raised.value.problems]


def test_windows_and_a_destination_window_are_read(tmp_path):
    config = load_config(write(tmp_path, """\
        windows:
          night: {hours: "22:00-06:00", days: [mon, tue, wed, thu, fri]}
          lunch: {hours: "12:00-13:30", timezone: Europe/Paris}
        destinations:
          PACS: {type: dicom, ae_title: PACS, host: 127.0.0.1, port: 104, window: night}
          ARCHIVE: {type: folder, path: archive, window: lunch}
          NOW: {type: folder, path: now}
        """))
    assert config.windows == {
        "night": DeliveryWindow("night", "22:00-06:00", frozenset(range(5))),
        "lunch": DeliveryWindow("lunch", "12:00-13:30", frozenset(range(7)), "Europe/Paris")}
    assert isinstance(config.destinations["PACS"], DicomDestination) and config.destinations["PACS"].window == "night"
    assert isinstance(config.destinations["ARCHIVE"], FolderDestination)
    assert config.destinations["ARCHIVE"].window == "lunch" and config.destinations["NOW"].window is None
    assert load_config(write(tmp_path, "")).windows == {}


def test_every_mistake_of_a_window_is_reported_with_its_line(tmp_path):
    found = problems(tmp_path, """\
        windows:
          late: {hours: "25:00-06:00"}
          short: {hours: "22:00"}
          odd: {hours: "22:00-06:00", days: [funday]}
          never: {hours: "22:00-06:00", days: []}
          away: {hours: "22:00-06:00", timezone: Mars/Olympus}
          empty: {hours: "10:00-10:00"}
          nohours: {days: [mon]}
          "bad name": {hours: "22:00-06:00"}
          number: {hours: 2200}
        destinations:
          PACS: {type: folder, path: pacs, window: missing}
          NEAR: {type: folder, path: near, window: nigth}
          BAD: {type: folder, path: bad, window: "not a name"}
        """)
    assert found == [
        "router.yaml:5: windows.late.hours: '25:00-06:00': 25:00 is not a time of the day (00:00 to 23:59, or "
        "24:00 as an end)",
        "router.yaml:6: windows.short.hours: '22:00' is not hours of the day: write HH:MM-HH:MM, e.g. 22:00-06:00",
        "router.yaml:7: windows.odd.days[0]: must be one of mon, tue, wed, thu, fri, sat, sun, not 'funday'",
        "router.yaml:8: windows.never.days: days is empty: name at least one day (mon, tue, wed, thu, fri, sat, "
        "sun), or leave days out for every day",
        "router.yaml:9: windows.away.timezone: 'Mars/Olympus' is not a time zone this system knows (e.g. "
        "Europe/Paris, UTC)",
        "router.yaml:10: windows.empty.hours: '10:00-10:00' starts where it ends: a window needs a span of time",
        "router.yaml:11: windows.nohours: needs hours",
        "router.yaml:12: windows: 'bad name' is not valid: A window name: letters, digits and _, not starting "
        "with a digit, as rule files write it.",
        "router.yaml:13: windows.number.hours: must be text, not 2200",
        "router.yaml:15: destinations.PACS.window: unknown window 'missing' (windows: away, bad name, empty, late, never, "
        "nohours, number, odd, short)",
        "router.yaml:16: destinations.NEAR.window: unknown window 'nigth' (windows: away, bad name, empty, late, never, "
        "nohours, number, odd, short)",
        "router.yaml:17: destinations.BAD.window: 'not a name' is not valid: The name of a window of `windows`: "
        "the destination's deliveries wait in its queue while the window is closed.",
    ]


def test_an_unknown_window_suggests_the_closest_one(tmp_path):
    [problem] = problems(tmp_path, """\
        windows:
          night: {hours: "22:00-06:00"}
        destinations:
          PACS: {type: folder, path: pacs, window: nigth}
        """)
    assert problem == "router.yaml:7: destinations.PACS.window: unknown window 'nigth' (did you mean night?)"


def test_a_worklist_takes_no_window(tmp_path):
    (tmp_path / "wl").mkdir()
    [problem] = problems(tmp_path, """\
        windows:
          night: {hours: "22:00-06:00"}
        destinations:
          WL: {type: worklist, path: wl, window: night}
        """)
    assert problem.startswith("router.yaml:7: destinations.WL: unknown key 'window'")


RULES_WITH_WINDOWS = ('rule "all" {\n  then\n    urgent\n    route to PACS during nigth\n}\n')


def test_lint_and_check_config_check_the_windows_of_the_rules(tmp_path):
    config = write(tmp_path, """\
        windows:
          night: {hours: "22:00-06:00"}
        destinations:
          PACS: {type: folder, path: pacs}
        """, RULES_WITH_WINDOWS)
    assert windows_from_config(config) == {"night"}
    lint = dicom_rules("lint", "--config", config, tmp_path / "main.rules", cwd=tmp_path)
    assert lint.returncode == 1
    assert "main.rules:4:26: error unknown-window unknown window 'nigth' (did you mean night?)" in lint.stdout
    # check-config reports the rule file's findings with the configuration's windows.
    [finding] = [d for d in rule_file_findings(load_config(config)) if d.is_error]
    assert (finding.code, finding.span.line, finding.span.column) == ("unknown-window", 4, 26)
    # Without a configuration the windows are not known: lint checks the rest.
    assert not [d for d in rulesengine.check_file(tmp_path / "main.rules", {"PACS": {}}) if d.is_error]
    # The tests of the rule file: refused with the configuration.
    (tmp_path / "main_test.rules").write_text('test "routed" {\n  given DataSet.Modality = "CT"\n'
                                              '  expect route to PACS\n}\n', encoding="utf-8")
    assert not load_suite(str(tmp_path / "main_test.rules")).errors
    tested = dicom_rules("test", "--config", config, tmp_path / "main_test.rules", cwd=tmp_path)
    assert tested.returncode != 0 and "unknown window 'nigth'" in tested.stdout + tested.stderr
