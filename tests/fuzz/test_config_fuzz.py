"""What a tired operator or a hostile one writes in the keys of series and study rules, windows,
notifications and retention (`windows:`, a destination's `window:`, `notifiers:`, `notify:`,
`retention:`, `storage_min_free`, `group_quiet_time`): every value of the wrong type, huge,
negative, empty, unknown, or a secret file that is missing, unreadable or a folder, is refused
with ConfigError, each problem naming the file and a line; never another exception. A seeded
run then puts random values of each kind at random keys of the same file."""

from __future__ import annotations

import copy
import os
import random
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from rulesengine.config import ConfigError, load_config

HOOK_TOKEN = "hook-token"
MAIL_PASSWORD = "mail-password"

BASE = {
    "storage": "var",
    "rules": "main.rules",
    "processes": 1,
    "group_quiet_time": "5m",
    "retention": {"delivered": "7d", "quarantine": "90d", "done": "30d", "failed": "30d"},
    "storage_min_free": "5%",
    "windows": {"night": {"hours": "22:00-06:00", "days": ["mon", "tue"], "timezone": "Europe/Paris"}},
    "destinations": {"PACS": {"type": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": 104,
                              "window": "night"}},
    "notifiers": {
        "hook": {"type": "webhook", "url": "http://127.0.0.1:9/hook", "timeout": 5,
                 "headers": {"Authorization": {"value_file": HOOK_TOKEN}},
                 "body": '{"event": {{ event | tojson }}}'},
        "mail": {"type": "email", "host": "127.0.0.1", "port": 2525, "from": "router@example.org",
                 "to": ["ops@example.org"], "username": "router", "password_file": MAIL_PASSWORD,
                 "subject": "{{ event }}"},
    },
    "notify": [{"event": "delivery-dead", "to": ["mail"]},
               {"event": "destination-unreachable", "after": "10m", "to": ["hook"]}],
}

# Where a hostile value goes, and the values a tired operator gets wrong there.
HOSTILE = {
    ("group_quiet_time",): ["", "-5m", "0s", "99999999999999999999d", "1e400", -1, 0, 10**30, True, [], {},
                            "five minutes", "5 m", "NaN", ".nan", None],
    ("retention", "delivered"): ["-1d", "", "forever", 10**30, [], {"a": 1}, True, "1e999d", -5],
    ("retention", "quarantine"): [0, "0s", "banana", None],
    ("retention",): ["7d", [], 7, None, {"kept": "7d"}],
    ("storage_min_free",): ["-5%", "101%", "5 %", "", "2XB", "-1GB", 10**30, "1e999GB", [], True, "NaN%", -1],
    ("windows",): [[], "night", 5, {"": {"hours": "22:00-06:00"}}, {"night": None}, {"night": "22:00-06:00"}],
    ("windows", "night", "hours"): ["", "25:00-06:00", "22:00", "22:00-22:00", "-1:00-02:00", 2200, [], None,
                                    "22:00-06:00-07:00", "99999999999:00-06:00", "\x00"],
    ("windows", "night", "days"): ["mon", [], ["monday"], ["mon", "mon"], [1, 2], "", None, [["mon"]]],
    ("windows", "night", "timezone"): ["Mars/Olympus_Mons", "", "../../../etc/passwd", "UTC+25", 5, [], None,
                                       "Europe/", "/etc/localtime", "\x00", "a" * 5000],
    ("windows", "night", "when"): ["always"],
    ("destinations", "PACS", "window"): ["", "day", 5, [], None, {"name": "night"}, "NIGHT"],
    ("notifiers",): [[], "hook", 5, {"hook": None}, {"": {"type": "webhook", "url": "http://127.0.0.1/"}},
                     {"bad name!": {"type": "webhook", "url": "http://127.0.0.1/"}}],
    ("notifiers", "hook", "type"): ["", "slack", None, 5],
    ("notifiers", "hook", "url"): ["", "ftp://127.0.0.1/", "http://", "http://user:secret@127.0.0.1/",
                                   "http://127.0.0.1:99999/", "http://[::1/", "not a url", 5, None, [],
                                   "file:///etc/passwd", "javascript:alert(1)"],
    ("notifiers", "hook", "timeout"): [-1, 0, "10s", 10**30, "", True, [], float("inf"), float("nan")],
    ("notifiers", "hook", "headers"): ["Authorization: x", [], {"X": 5}, {"X": None}, {"X": {"value_env": ""}},
                                       {"X": {"value_file": "missing-file"}}, {"X": {"value_file": "."}},
                                       {"X": {"value_file": "unreadable"}}, {"X": {"value_file": "empty"}},
                                       {"X": {"value_file": "binary"}}, {"X": {"value_env": "NO_SUCH_VARIABLE_12"}},
                                       {"X": {"value_env": "A", "value_file": HOOK_TOKEN}}, {"X": {"other": 1}},
                                       {"X": "line\nbreak"}, {"": "x"}],
    ("notifiers", "hook", "body"): ["", "{{", "{{ undefined_name }}", "not json", "{% for %}", 5, [], None,
                                    "{{ ().__class__.__mro__ }}", "{{ range(10**9) | list }}"],
    ("notifiers", "hook", "retry"): ["3", [], {"max_attempts": -1}, {"max_attempts": 10**30}, {"delays": "x"}],
    ("notifiers", "hook", "patient_data"): ["yes", 1, None],
    ("notifiers", "hook", "ca_certificates"): ["missing.pem", ".", "", 5],
    ("notifiers", "hook", "unknown_key"): ["x"],
    ("notifiers", "mail", "to"): [[], "", "ops@example.org", [""], [5], None, ["not an address"]],
    ("notifiers", "mail", "from"): ["", None, 5, []],
    ("notifiers", "mail", "port"): [0, -1, 70000, "25", None, 10**30],
    ("notifiers", "mail", "tls"): ["", "ssl", None, True],
    ("notifiers", "mail", "host"): ["", None, 5],
    ("notifiers", "mail", "password_file"): ["missing-file", ".", "unreadable", "empty", "binary", "", 5, None],
    ("notifiers", "mail", "subject"): ["{{", "{{ event.__class__ }}", "{% include 'x' %}", "{{ undefined_name }}"],
    ("notifiers", "mail", "timeout"): [-30, 0, "30s", 10**30],
    ("secrets",): [{"hash_key_file": "missing-file"}, {"hash_key_file": "."}, {"hash_key_file": "\x00"},
                   {"hash_key_file": "empty"}, {"hash_key_file": "binary"}, {"hash_key_file": "unreadable"},
                   {"hash_key_env": "NO_SUCH_VARIABLE_12"}, {"hash_key_env": ""}, "key", [], 5],
    ("notify",): [{}, "delivery-dead", [None], [[]], [{"event": "delivery-dead"}], [{}], 5],
    ("notify", 0, "event"): ["", "no-such-event", None, 5, []],
    ("notify", 0, "to"): [[], "mail", ["nobody"], [None], [5], None],
    ("notify", 0, "after"): ["10m", -1],
    ("notify", 1, "after"): ["-10m", "", "0s", "99999999999999999999d", 10**30, [], "soon", None, True],
    ("notify", 1, "unknown_key"): [1],
}


def _set(data: dict, path: tuple, value) -> dict:
    """A copy of `data` with `value` at `path` (unchanged where an earlier change took the path away)."""
    data = copy.deepcopy(data)
    target = data
    try:
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass
    return data


def _write(folder: Path, data: dict) -> Path:
    path = folder / "router.yaml"
    yaml = YAML()
    yaml.default_flow_style = False
    with open(path, "w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to PACS\n}\n', encoding="utf-8")
    (tmp_path / HOOK_TOKEN).write_text("Bearer token\n", encoding="utf-8")
    (tmp_path / MAIL_PASSWORD).write_text("secret\n", encoding="utf-8")
    (tmp_path / "empty").write_text("", encoding="utf-8")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00secret\n")
    (tmp_path / "unreadable").write_text("secret\n", encoding="utf-8")
    os.chmod(tmp_path / "unreadable", 0)
    assert _verdict(_write(tmp_path, BASE)) is None  # what each test breaks loads whole
    return tmp_path


def _verdict(path: Path) -> list[str] | None:
    """None when the file loads; its problems when it is refused; anything else raises."""
    try:
        load_config(path)
    except ConfigError as refused:
        return list(refused.problems) or [str(refused)]
    return None


def _placed(path: Path, problems: list[str]) -> bool:
    """Every problem names the file, and all but those of the file as a whole a line."""
    return all(re.match(rf"{re.escape(str(path))}:\d+: \S", problem) for problem in problems)


def test_the_base_configuration_loads(folder):
    config = load_config(_write(folder, BASE))
    assert set(config.notifiers) == {"hook", "mail"} and config.windows["night"].timezone == "Europe/Paris"


def _running_as_root() -> bool:
    return os.geteuid() == 0


@pytest.mark.parametrize("where", list(HOSTILE), ids=lambda where: ".".join(map(str, where)))
def test_hostile_values_are_refused_with_the_file_and_a_line(folder, where):
    for value in HOSTILE[where]:
        if "unreadable" in repr(value) and _running_as_root():  # root reads a file of mode 0: nothing to test
            continue
        path = _write(folder, _set(BASE, where, value))
        problems = _verdict(path)
        if problems is None:
            # Loading is right only for the few values that are valid: a window not needed, a quiet
            # time that is a number. Each of those is listed.
            assert (where, repr(value)) in ACCEPTED, f"{where} = {value!r} was accepted"
            continue
        assert _placed(path, problems), (where, value, problems)
        assert any(str(where[0]) in problem for problem in problems), (where, value, problems)
        assert "Traceback" not in "\n".join(problems)


# Values of HOSTILE that are valid after all (each says why).
ACCEPTED = {(where, repr(value)) for where, value in (
    (("retention", "quarantine"), None),  # null: the default
    (("retention",), None),  # null: the defaults
    (("windows", "night", "days"), None),  # null: every day
    (("windows", "night", "timezone"), None),  # null: the router's time zone
    (("destinations", "PACS", "window"), None),  # null: no window
    (("notifiers", "hook", "patient_data"), None),
    (("notify", 0, "after"), "10m"),
    (("notify", 1, "after"), None),
    (("notify", 1, "after"), "0s"),  # at once: the first failure is told
    (("storage_min_free",), "5 %"),  # a space before the unit is read as none
    (("windows", "night", "days"), ["mon", "mon"]),  # Monday twice is Monday
    (("notifiers", "hook", "retry"), {"max_attempts": 10**30}),  # retried for as long as the router runs
    (("notifiers", "mail", "to"), ["not an address"]),  # the SMTP server judges it: dead, with its answer
    (("notify", 1, "after"), "99999999999999999999d"),  # never
    (("notify", 1, "after"), 10**30),  # never
)}

KINDS_OF_VALUE = ("", -1, 0, 10**40, -(10**40), 1.5, True, None, [], {}, "x" * 10000, "\x00", "-5m", "1e999d",
                  "25:00-26:00", "Not/AZone", "../..", {"unknown": 1}, ["a", 1, None])


def test_seeded_random_values_at_random_keys_never_raise_anything_else(folder):
    rng = random.Random(12)
    places = list(HOSTILE)
    for _ in range(150):
        data = BASE
        for _ in range(rng.choice((1, 2, 3))):
            data = _set(data, rng.choice(places), rng.choice(KINDS_OF_VALUE))
        path = _write(folder, data)
        try:
            problems = _verdict(path)
        except Exception as failure:  # noqa: BLE001 - any other exception is the bug this test looks for
            pytest.fail(f"{failure!r} for:\n{path.read_text()}")
        if problems is not None:
            assert _placed(path, problems), (problems, path.read_text())
