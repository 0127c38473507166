"""The router configuration, end to end: real YAML files read by load_config.

Every problem is reported with the file, the line and the key, in plain words;
relative paths are relative to the configuration file; secrets come from an
environment variable or a file; what is left out gets its default.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rulesengine.config import (
    ConfigError,
    DicomDestination,
    FolderDestination,
    Retry,
    Timeouts,
    WorklistDestination,
    load_config,
)
from rulesengine.lang.functions import DEFAULT_HASH_KEY

from helpers.files import ROOT
from helpers.cli import dicom_rules as run_dicom_rules

HEAD = "storage: var\nrules: main.rules\n"


def with_head(body: str) -> str:
    """The required keys, then `body` (an indented triple-quoted string)."""
    return HEAD + textwrap.dedent(body)


def write(folder: Path, text: str, name: str = "router.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(folder: Path, text: str) -> list[str]:
    """The problems load_config reports, with the file name made short."""
    path = write(folder, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == "\n".join(raised.value.problems)
    return [problem.replace(str(path), "router.yaml") for problem in raised.value.problems]


def one_problem(folder: Path, text: str) -> str:
    found = problems(folder, text)
    assert len(found) == 1, found
    return found[0]


# ---- every kind of error names the file, the line and the key ---------------------------------


def test_an_unknown_key_names_its_line_and_suggests_the_known_one(tmp_path):
    problem = one_problem(tmp_path, HEAD + "no_destinaton: quarantine\n")
    assert problem == ("router.yaml:3: top level: unknown key 'no_destinaton' (did you mean no_destination?); "
                       "known keys: storage, rules, rules_folders, no_destination, group_quiet_time, journal, node, processes, "
                       "journal_lease_seconds, journal_password_file, "
                       "journal_password_env, secrets, log, listeners, watch, destinations, "
                       "windows, console, retention, storage_min_free, notifiers, notify")


def test_node_names_this_router_among_the_nodes_of_one_journal(tmp_path):
    import socket
    from rulesengine.runtime.storage import Storage
    config = load_config(write(tmp_path, HEAD + "node: router-2.site_a\n"))
    assert config.node == "router-2.site_a"
    journal = Storage.of(config).journal()
    try:
        assert journal.node == "router-2.site_a"
    finally:
        journal.close()
    assert load_config(write(tmp_path, HEAD)).node is None
    default = Storage.of(load_config(write(tmp_path, HEAD))).journal()
    try:
        assert default.node == socket.gethostname()
    finally:
        default.close()
    for bad in ("'-a'", "'a b'", "\"a'; DROP TABLE deliveries; --\"", "'" + "n" * 201 + "'", "3", "''"):
        problem = one_problem(tmp_path, HEAD + f"node: {bad}\n")
        assert problem.startswith("router.yaml:3: node: "), problem


# ---- processes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2", "64", "2.0"])
def test_processes_is_a_whole_number_of_receiving_processes(tmp_path, value):
    config = load_config(write(tmp_path, HEAD + f"processes: {value}\n"))
    assert config.processes == int(float(value)) and config.process_count() == int(float(value))


def test_processes_auto_is_the_default_and_means_the_cores_this_router_may_run_on(tmp_path):
    import os
    cores = len(os.sched_getaffinity(0))
    assert load_config(write(tmp_path, HEAD)).processes == "auto"
    config = load_config(write(tmp_path, HEAD + "processes: auto\n"))
    assert config.processes == "auto" and config.process_count() == cores
    # the affinity, not the machine's count: a router pinned to one core runs one process
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        assert config.process_count() == 1
    finally:
        os.sched_setaffinity(0, allowed)


RETRIEVING = """\
listeners:
  - {name: main, ae_title: ROUTER, port: 11112, services: [echo, store, move]}
destinations:
  PACS: {type: dicom, ae_title: PACS, host: 127.0.0.1, port: 11113, retrieve: c-move}
"""


def test_auto_is_every_core_also_where_the_router_retrieves_by_c_move(tmp_path):
    """The instances a source moves back reach the process that asked, whichever receives them
    (retrieval_exchange.py): C-MOVE retrievals cost no cores."""
    import os
    moving = load_config(write(tmp_path, HEAD + RETRIEVING))
    assert moving.process_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, shown", [
    ("0", "0"), ("-2", "-2"), ("65", "65"), ("1000000", "1000000"), ("2.5", "2.5"), ('"4"', "'4'"),
    ("Auto", "'Auto'"), ("all", "'all'"), ("true", "True"), ("[2]", "[2]"), ("null", "None"), ("{n: 2}", "{'n': 2}"),
])
def test_a_silly_number_of_processes_is_refused_with_line_and_key(tmp_path, value, shown):
    problem = one_problem(tmp_path, HEAD + "node: a\n" + f"processes: {value}\n")
    assert problem == f"router.yaml:4: processes: must be a whole number from 1 to 64, or auto, not {shown}"


def test_check_config_names_the_line_and_column_of_a_bad_number_of_processes(tmp_path):
    (tmp_path / "main.rules").write_text('rule "all" { then drop }\n', encoding="utf-8")
    write(tmp_path, HEAD + "processes: 0\n")
    result = run_dicom_rules("check-config", "router.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert ("router.yaml:3:1: error config processes: must be a whole number from 1 to 64, or auto, not 0"
            in result.stdout), result.stdout
    run = run_dicom_rules("run", "router.yaml", cwd=tmp_path)
    assert run.returncode == 2 and "router.yaml:3: processes: must be a whole number from 1 to 64" in run.stderr
    assert not (tmp_path / "var").exists()  # refused before the storage folder is touched


def test_an_unknown_key_deep_inside_names_the_line_of_that_key(tmp_path):
    problem = one_problem(tmp_path, with_head("""\
        destinations:
          PACS:
            type: dicom
            ae_title: PACS
            host: pacs
            port: 104
            retry:
              delay: 5
              max_attempt: 3
        """))
    assert problem == ("router.yaml:11: destinations.PACS.retry: unknown key 'max_attempt' (did you mean "
                       "max_attempts?); known keys: delay, multiplier, cap, max_attempts")


def test_unknown_keys_of_a_destination_are_named_with_a_suggestion_where_one_is_close(tmp_path):
    problem = one_problem(tmp_path, with_head("""\
        destinations:
          ARCHIVE:
            type: folder
            path: archive
            nameing: "{SOPInstanceUID}.dcm"
            host: pacs
        """))
    assert problem.startswith("router.yaml:7: destinations.ARCHIVE: unknown key 'nameing' (did you mean naming?), "
                              "'host'; known keys: type, path, naming, retry")


@pytest.mark.parametrize("line,expected", [
    ("max_pdu: big", "router.yaml:7: listeners[0].max_pdu: must be a whole number, not 'big'"),
    ('max_pdu: "131072"', "router.yaml:7: listeners[0].max_pdu: must be a whole number, not '131072'"),
    ("require_called_aet: yes", "router.yaml:7: listeners[0].require_called_aet: must be true or false, not 'yes'"),
    ("require_called_aet: yes please",
     "router.yaml:7: listeners[0].require_called_aet: must be true or false, not 'yes please'"),
    ("allowed_calling_aets: CT1", "router.yaml:7: listeners[0].allowed_calling_aets: must be a list, not 'CT1'"),
    ("mode: fast", "router.yaml:7: listeners[0].mode: must be one of async, sync, not 'fast'"),
    ("max_associations: 0", "router.yaml:7: listeners[0].max_associations: must be at least 1, not 0"),
    ("timeouts: {acse: 0}", "router.yaml:7: listeners[0].timeouts.acse: must be more than 0, not 0"),
    ("timeouts: 30", "router.yaml:7: listeners[0].timeouts: must be a mapping of keys to values, not 30"),
])
def test_a_wrong_type_or_value_names_line_key_and_value(tmp_path, line, expected):
    text = HEAD + f"listeners:\n  - name: main\n    ae_title: ROUTER\n    port: 11112\n    {line}\n"
    assert one_problem(tmp_path, text) == expected


def test_a_whole_level_of_the_wrong_type(tmp_path):
    assert one_problem(tmp_path, HEAD + "listeners: {name: main}\n") == \
        "router.yaml:3: listeners: must be a list, not {'name': 'main'}"
    assert one_problem(tmp_path, "- storage\n") == "router.yaml: top level: must be a mapping of keys to values, " \
                                                   "not ['storage']"


@pytest.mark.parametrize("port,words", [
    ("70000", "must be at most 65535, not 70000"),
    ("0", "must be at least 1, not 0"),
    ("-104", "must be at least 1, not -104"),
    ('"104"', "must be a whole number, not '104'"),
    ("104.5", "must be a whole number, not 104.5"),
])
def test_an_out_of_range_port(tmp_path, port, words):
    text = HEAD + f"destinations:\n  PACS:\n    type: dicom\n    ae_title: PACS\n    host: pacs\n    port: {port}\n"
    assert one_problem(tmp_path, text) == f"router.yaml:8: destinations.PACS.port: {words}"


def test_a_port_written_as_a_whole_float_is_a_whole_number(tmp_path):
    """JSON Schema's integer admits 11112.0; sockets do not: the model holds an int."""
    config = load_config(write(tmp_path, with_head("""\
        listeners: [{name: main, ae_title: ROUTER, port: 11112.0, max_pdu: 65536.0}]
        destinations:
          PACS: {type: dicom, ae_title: PACS, host: pacs, port: 104.0, batch: 10.0, retry: {max_attempts: 3.0}}
        """)))
    listener, pacs = config.listeners[0], config.destinations["PACS"]
    assert (listener.port, listener.max_pdu, pacs.port, pacs.batch, pacs.retry.max_attempts) == (11112, 65536, 104, 10, 3)
    assert all(type(v) is int for v in (listener.port, listener.max_pdu, pacs.port, pacs.batch, pacs.retry.max_attempts))


@pytest.mark.parametrize("title", ["ROUTER-OF-THE-RADIOLOGY", "", "A\\\\B", "CAFÉ"])
def test_a_bad_ae_title(tmp_path, title):
    problem = one_problem(tmp_path, HEAD + f'listeners:\n  - name: main\n    ae_title: "{title}"\n    port: 104\n')
    assert problem.startswith("router.yaml:5: listeners[0].ae_title: ")
    assert problem.endswith("is not valid: An AE title: 1 to 16 characters, no backslash.")


def test_a_bad_calling_ae_title_of_a_destination(tmp_path):
    problem = one_problem(tmp_path, with_head("""\
        destinations:
          PACS: {type: dicom, ae_title: PACS, host: pacs, port: 104, calling_ae_title: THE-ROUTER-OF-RADIOLOGY}
        """))
    assert problem.startswith("router.yaml:4: destinations.PACS.calling_ae_title: 'THE-ROUTER-OF-RADIOLOGY' is "
                              "not valid")


def test_a_bad_destination_name_names_the_line_of_that_name(tmp_path):
    problem = one_problem(tmp_path, with_head("""\
        destinations:
          ARCHIVE: {type: folder, path: archive}
          2ND-PACS: {type: folder, path: pacs}
        """))
    assert problem == ("router.yaml:5: destinations: '2ND-PACS' is not valid: A destination name: letters, digits "
                       "and _, not starting with a digit, as rule files write it.")


def test_a_missing_required_key(tmp_path):
    assert one_problem(tmp_path, "storage: var\n") == "router.yaml: top level: needs rules"
    assert one_problem(tmp_path, HEAD + "listeners:\n  - name: main\n    ae_title: ROUTER\n") == \
        "router.yaml:4: listeners[0]: needs port"
    assert one_problem(tmp_path, HEAD + "destinations:\n  PACS: {type: dicom, host: pacs, port: 104}\n") == \
        "router.yaml:4: destinations.PACS: needs ae_title"
    assert one_problem(tmp_path, HEAD + "destinations:\n  PACS: {host: pacs}\n") == \
        "router.yaml:4: destinations.PACS: needs type"
    assert one_problem(tmp_path, HEAD + "watch:\n  - {name: inbox}\n") == "router.yaml:4: watch[0]: needs path"
    assert one_problem(tmp_path, HEAD + "listeners:\n  - {name: a, ae_title: A, port: 104, tls: {certificate: c}}\n") \
        == "router.yaml:4: listeners[0].tls: needs private_key"


def test_a_destination_of_an_unknown_type(tmp_path):
    assert one_problem(tmp_path, HEAD + "destinations:\n  ARCHIVE:\n    type: ftp\n    path: archive\n") == \
        "router.yaml:5: destinations.ARCHIVE.type: must be one of dicom, folder, worklist, not 'ftp'"


@pytest.mark.parametrize("naming,words", [
    ("{PatientId}/{SOPInstanceUID}.dcm", "{PatientId} is not a DICOM keyword"),
    ("{}.dcm", "'{}.dcm': {} names no keyword"),
    ("{SOPInstanceUID.dcm", "'{SOPInstanceUID.dcm': "),
])
def test_a_bad_naming_template_names_line_and_key(tmp_path, naming, words):
    problem = one_problem(tmp_path, with_head(f"""\
        destinations:
          ARCHIVE:
            type: folder
            path: archive
            naming: "{naming}"
        """))
    assert problem.startswith(f"router.yaml:7: destinations.ARCHIVE.naming: {words}")


def test_literal_braces_in_a_naming_template(tmp_path):
    config = load_config(write(tmp_path, with_head("""\
        destinations:
          ARCHIVE: {type: folder, path: archive, naming: "{{x}}/{SOPInstanceUID}.dcm"}
        """)))
    assert config.destinations["ARCHIVE"].naming == "{{x}}/{SOPInstanceUID}.dcm"


def test_a_name_longer_than_64_characters(tmp_path):
    problem = one_problem(tmp_path, HEAD + f"watch:\n  - name: {'w' * 65}\n    path: inbox\n")
    assert problem.startswith("router.yaml:4: watch[0].name: ")
    assert problem.endswith("is not valid: Name of the watched folder, as rules read it in Source.Name.")


def test_keys_of_the_other_destination_type_are_unknown(tmp_path):
    problem = one_problem(tmp_path, HEAD + "destinations:\n  ARCHIVE:\n    type: folder\n    path: a\n    port: 104\n")
    assert problem.startswith("router.yaml:7: destinations.ARCHIVE: unknown key 'port'")


def test_a_yaml_syntax_error_names_line_and_column(tmp_path):
    problem = one_problem(tmp_path, HEAD + "listeners:\n  - name: main\n    ae_title: [ROUTER\n    port: 104\n")
    assert problem.startswith("router.yaml:6:9: not valid YAML: ")
    problem = one_problem(tmp_path, HEAD + "destinations:\n\tPACS: {}\n")
    assert problem.startswith("router.yaml:4:1: not valid YAML: ")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_file(tmp_path, text):
    assert one_problem(tmp_path, text) == "router.yaml: the file is empty"


def test_a_file_that_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: cannot read: No such file or directory"):
        load_config(tmp_path / "nowhere.yaml")
    (tmp_path / "latin1.yaml").write_bytes(HEAD.encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(tmp_path / "latin1.yaml")


def test_two_listeners_on_one_port(tmp_path):
    problem = one_problem(tmp_path, with_head("""\
        listeners:
          - {name: a, ae_title: A, port: 11112}
          - name: b
            ae_title: B
            port: 11112
        """))
    assert problem == "router.yaml:7: listeners[1].port: port 11112 on 127.0.0.1 is already used by listeners[0] " \
                      "(a, on 127.0.0.1)"


def test_every_interface_and_one_address_on_one_port_conflict(tmp_path):
    problem = one_problem(tmp_path, with_head("""\
        listeners:
          - {name: a, ae_title: A, port: 104, bind: 0.0.0.0}
          - {name: b, ae_title: B, port: 104, bind: 10.0.0.5}
          - {name: c, ae_title: C, port: 105, bind: 10.0.0.5}
          - {name: d, ae_title: D, port: 105, bind: 10.0.0.6}
        """))
    assert problem == "router.yaml:5: listeners[1].port: port 104 on 10.0.0.5 is already used by listeners[0] " \
                      "(a, on 0.0.0.0)"


def test_duplicate_names_of_listeners_and_watched_folders(tmp_path):
    found = problems(tmp_path, with_head("""\
        listeners:
          - {name: main, ae_title: A, port: 11112}
          - {name: main, ae_title: B, port: 11113}
        watch:
          - {name: main, path: inbox}
        """))
    own = "listeners and watched folders need names of their own"
    assert found == [
        f"router.yaml:5: listeners[1].name: the name 'main' is already used by listeners[0].name; {own}",
        f"router.yaml:7: watch[0].name: the name 'main' is already used by listeners[0].name; {own}",
    ]


def test_duplicate_destination_names_are_a_yaml_error_with_line_and_column(tmp_path):
    problem = one_problem(tmp_path, HEAD + "destinations:\n  ARCHIVE: {type: folder, path: a}\n"
                                           "  ARCHIVE: {type: folder, path: b}\n")
    assert problem.startswith('router.yaml:5:3: not valid YAML: found duplicate key "ARCHIVE"')


def test_every_problem_is_reported_in_the_order_of_the_file(tmp_path):
    found = problems(tmp_path, with_head("""\
        log: {level: verbose}
        listeners:
          - name: main
            ae_title: ROUTER
            port: 70000
        destinations:
          ARCHIVE: {type: ftp}
        """))
    assert [problem.split(":")[1] for problem in found] == ["3", "7", "9"]


def test_every_kind_of_problem_is_reported_at_once(tmp_path, monkeypatch):
    """Schema errors do not hide the checks made on what the schema accepts: names, ports,
    naming templates, the hash key, the log folder; each has its file, line and key."""
    monkeypatch.delenv("ROUTER_HASH_KEY", raising=False)
    found = problems(tmp_path, with_head("""\
        log: {level: verbose, file: nowhere/router.log}
        secrets: {hash_key_env: ROUTER_HASH_KEY}
        listeners:
          - {name: main, ae_title: ROUTER, port: 11112, max_pdu: 1000}
          - {name: main, ae_title: ROUTER, port: 11112}
        watch:
          - {name: inbox, path: inbox, pattern: 7}
        destinations:
          ARCHIVE: {type: folder, path: archive, naming: "{PatientId}.dcm"}
          PACS: {type: dicom, ae_title: PACS, host: pacs, port: 0}
        """))
    own = "listeners and watched folders need names of their own"
    assert found == [
        "router.yaml:3: log.level: must be one of debug, info, warning, error, not 'verbose'",
        f"router.yaml:3: log.file: the folder {tmp_path / 'nowhere'} does not exist",
        "router.yaml:4: secrets.hash_key_env: the environment variable ROUTER_HASH_KEY is not set",
        "router.yaml:6: listeners[0].max_pdu: must be at least 4096, not 1000",
        f"router.yaml:7: listeners[1].name: the name 'main' is already used by listeners[0].name; {own}",
        "router.yaml:7: listeners[1].port: port 11112 on 127.0.0.1 is already used by listeners[0] "
        "(main, on 127.0.0.1)",
        "router.yaml:9: watch[0].pattern: must be text, not 7",
        "router.yaml:11: destinations.ARCHIVE.naming: {PatientId} is not a DICOM keyword",
        "router.yaml:12: destinations.PACS.port: must be at least 1, not 0",
    ]


def test_what_the_schema_refuses_is_not_checked_again(tmp_path):
    """No cascade: a value the schema refuses is reported once, not also as a duplicate,
    a bad template or an unreadable file."""
    found = problems(tmp_path, with_head("""\
        log: {file: 7}
        secrets: {hash_key_env: 7}
        listeners:
          - {name: main, ae_title: ROUTER, port: 70000}
          - {name: main, ae_title: ROUTER, port: 70000, bind: [0.0.0.0]}
        destinations:
          ARCHIVE: {type: ftp, path: archive, naming: "{PatientId}.dcm"}
          FILES: {type: folder, path: files, naming: 42}
        """))
    lines = [int(problem.split(":")[1]) for problem in found]
    assert lines == sorted(lines)  # in the order of the file
    assert sorted(problem.split(": ", 1)[1] for problem in found if "destinations" not in problem) == sorted([
        "log.file: must be text, not 7",
        "secrets.hash_key_env: must be text, not 7",
        "listeners[0].port: must be at most 65535, not 70000",
        "listeners[1].port: must be at most 65535, not 70000",
        "listeners[1].bind: must be text, not ['0.0.0.0']",
        "listeners[1].name: the name 'main' is already used by listeners[0].name; "
        "listeners and watched folders need names of their own",
    ])
    destinations = [problem for problem in found if "destinations" in problem]
    assert any("destinations.ARCHIVE.type: must be one of" in p for p in destinations), destinations
    assert any("destinations.FILES.naming: must be text, not 42" in p for p in destinations), destinations
    assert not any("PatientId" in p for p in destinations), destinations


def test_a_whole_section_of_the_wrong_type_is_one_problem(tmp_path):
    assert problems(tmp_path, HEAD + "listeners: main\nwatch: {name: inbox}\nsecrets: key\nlog: debug\n") == [
        "router.yaml:3: listeners: must be a list, not 'main'",
        "router.yaml:4: watch: must be a list, not {'name': 'inbox'}",
        "router.yaml:5: secrets: must be a mapping of keys to values, not 'key'",
        "router.yaml:6: log: must be a mapping of keys to values, not 'debug'",
    ]


def test_check_config_reports_every_problem_with_its_line(tmp_path):
    write(tmp_path, with_head("""\
        listeners:
          - {name: main, ae_title: ROUTER, port: 70000}
          - {name: main, ae_title: ROUTER, port: 11112, tls: {certificate: missing.crt, private_key: missing.key}}
        destinations:
          ARCHIVE: {type: folder, path: archive, naming: "{PatientId}.dcm"}
        """))
    (tmp_path / "main.rules").write_text('rule "all" { then route to ARCHIVE }\n', encoding="utf-8")
    result = dicom_rules("check-config", "router.yaml", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines if line.startswith("router.yaml:")] == \
        ["router.yaml:4:1", "router.yaml:5:1", "router.yaml:7:1"], result.stdout
    assert "listeners[0].port: must be at most 65535, not 70000" in result.stdout
    assert "listeners[1].name: the name 'main' is already used" in result.stdout
    assert "destinations.ARCHIVE.naming: {PatientId} is not a DICOM keyword" in result.stdout
    assert "3 errors" in result.stderr


def test_check_config_names_the_line_of_a_missing_tls_file(tmp_path):
    write(tmp_path, with_head("""\
        listeners:
          - name: main
            ae_title: ROUTER
            port: 11112
            tls:
              certificate: server.crt
              private_key: missing.key
        destinations:
          ARCHIVE: {type: folder, path: archive}
        """))
    (tmp_path / "server.crt").write_text("", encoding="utf-8")
    (tmp_path / "main.rules").write_text('rule "all" { then route to ARCHIVE }\n', encoding="utf-8")
    result = dicom_rules("check-config", "router.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert f"router.yaml:9:1: error config listeners[0].tls.private_key: no such file {tmp_path / 'missing.key'}" \
        in result.stdout, result.stdout


# ---- relative paths -------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_configuration_file(tmp_path, monkeypatch):
    folder = tmp_path / "etc" / "router"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    write(folder, "secret key\n", "keys/hash.key")
    (folder / "logs").mkdir()  # the log file's folder must exist
    config = load_config(write(folder, """\
        storage: ../../var/router
        rules: rules/main.rules
        secrets: {hash_key_file: keys/hash.key}
        log: {file: logs/router.log}
        listeners:
          - name: main
            ae_title: ROUTER
            port: 11112
            association_file: contexts.txt
            tls: {certificate: tls/router.pem, private_key: tls/router.key, ca_certificates: tls/ca.pem}
        watch:
          - {name: inbox, path: inbox}
          - {name: drop, path: /srv/drop, done: drop-done, failed: ./drop-failed/}
        destinations:
          PACS:
            type: dicom
            ae_title: PACS
            host: pacs
            port: 2762
            tls: {certificate: tls/router.pem, private_key: tls/router.key}
          ARCHIVE: {type: folder, path: ../archive, naming: "{PatientID}/{SOPInstanceUID}.dcm"}
        """))
    assert config.storage == str(tmp_path / "var" / "router")
    assert config.rules == str(folder / "rules" / "main.rules")
    assert config.log_file == str(folder / "logs" / "router.log")
    assert config.secrets.hash_key == b"secret key"
    listener = config.listeners[0]
    assert listener.association_file == str(folder / "contexts.txt")
    assert listener.tls.certificate == str(folder / "tls" / "router.pem")
    assert listener.tls.private_key == str(folder / "tls" / "router.key")
    assert listener.tls.ca_certificates == str(folder / "tls" / "ca.pem")
    inbox, drop = config.watch
    assert (inbox.path, inbox.done, inbox.failed) == (str(folder / "inbox"), str(folder / "inbox" / "done"),
                                                      str(folder / "inbox" / "failed"))
    assert (drop.path, drop.done, drop.failed) == ("/srv/drop", str(folder / "drop-done"), str(folder / "drop-failed"))
    pacs, archive = config.destinations["PACS"], config.destinations["ARCHIVE"]
    assert pacs.tls.certificate == str(folder / "tls" / "router.pem") and pacs.tls.ca_certificates is None
    assert archive.path == str(folder.parent / "archive")
    assert archive.naming == "{PatientID}/{SOPInstanceUID}.dcm"  # relative to the folder, never resolved


def test_a_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(write(tmp_path, "storage: ~/router\nrules: main.rules\n"))
    assert config.storage == str(tmp_path / "home" / "router")


def test_the_configuration_may_be_named_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path, HEAD, "conf/router.yaml")
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/router.yaml")
    assert config.storage == str(tmp_path / "conf" / "var")


# ---- secrets --------------------------------------------------------------------------------


def test_the_hash_key_from_an_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTER_HASH_KEY", "s3cret")
    config = load_config(write(tmp_path, HEAD + "secrets:\n  hash_key_env: ROUTER_HASH_KEY\n  uid_root: '1.2.3'\n"))
    assert config.secrets.hash_key == b"s3cret"
    assert config.secrets.uid_root == "1.2.3"
    assert config.development_key is False


def test_a_missing_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("ROUTER_HASH_KEY", raising=False)
    assert one_problem(tmp_path, HEAD + "secrets:\n  hash_key_env: ROUTER_HASH_KEY\n") == \
        "router.yaml:4: secrets.hash_key_env: the environment variable ROUTER_HASH_KEY is not set"
    monkeypatch.setenv("ROUTER_HASH_KEY", "")
    assert one_problem(tmp_path, HEAD + "secrets:\n  hash_key_env: ROUTER_HASH_KEY\n") == \
        "router.yaml:4: secrets.hash_key_env: the environment variable ROUTER_HASH_KEY is empty"


def test_tools_that_do_not_need_the_key_do_not_look_it_up(tmp_path, monkeypatch):
    monkeypatch.delenv("ROUTER_HASH_KEY", raising=False)
    config = load_config(write(tmp_path, HEAD + "secrets:\n  hash_key_env: ROUTER_HASH_KEY\n"), secrets=False)
    assert config.secrets.hash_key == DEFAULT_HASH_KEY


def test_the_hash_key_from_a_file_is_its_first_line(tmp_path):
    write(tmp_path, "  the key  \nsecond line\n", "hash.key")
    config = load_config(write(tmp_path, HEAD + "secrets: {hash_key_file: hash.key}\n"))
    assert config.secrets.hash_key == b"the key"
    assert config.development_key is False


def test_a_key_file_that_cannot_be_read_or_is_empty(tmp_path):
    problem = one_problem(tmp_path, HEAD + "secrets:\n  hash_key_file: missing.key\n")
    assert problem == f"router.yaml:4: secrets.hash_key_file: cannot read {tmp_path / 'missing.key'}: " \
                      "No such file or directory"
    write(tmp_path, "\nkey on the second line\n", "empty.key")
    problem = one_problem(tmp_path, HEAD + "secrets:\n  hash_key_file: empty.key\n")
    assert problem == f"router.yaml:4: secrets.hash_key_file: the first line of {tmp_path / 'empty.key'} is empty"


def test_two_sources_of_the_key_are_refused(tmp_path):
    text = HEAD + "secrets:\n  hash_key_env: ROUTER_HASH_KEY\n  hash_key_file: hash.key\n"
    assert one_problem(tmp_path, text) == \
        "router.yaml:5: secrets: hash_key_env and hash_key_file both name the hash key; keep one"
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), secrets=False)


def test_a_uid_root_must_be_a_uid_written_as_text(tmp_path):
    assert one_problem(tmp_path, HEAD + "secrets:\n  uid_root: 2.25\n") == \
        "router.yaml:4: secrets.uid_root: must be text, not 2.25"
    assert one_problem(tmp_path, HEAD + "secrets:\n  uid_root: '1.02.3'\n").startswith(
        "router.yaml:4: secrets.uid_root: '1.02.3' is not valid")


def test_without_secrets_the_development_key_is_used(tmp_path):
    config = load_config(write(tmp_path, HEAD))
    assert config.development_key is True
    assert config.secrets.hash_key == DEFAULT_HASH_KEY
    assert config.secrets.uid_root == "2.25"


# ---- defaults ----------------------------------------------------------------------------


def test_defaults_are_applied(tmp_path):
    config = load_config(write(tmp_path, with_head("""\
        listeners:
          - {name: main, ae_title: ROUTER, port: 11112}
        watch:
          - {name: inbox, path: inbox}
        destinations:
          PACS: {type: dicom, ae_title: PACS, host: pacs.example.org, port: 104}
          FILES: {type: folder, path: files}
        """)))
    assert (config.no_destination, config.log_level, config.log_file) == ("quarantine", "info", None)
    listener = config.listeners[0]
    assert (listener.bind, listener.mode, listener.allowed_calling_aets, listener.require_called_aet) == \
        ("127.0.0.1", "async", (), True)
    assert (listener.association_file, listener.transfer_syntaxes, listener.tls) == (None, None, None)
    assert listener.accept_unknown_sop_classes is True
    assert (listener.max_associations, listener.max_pdu) == (32, 131072)
    assert listener.timeouts == Timeouts(connect=10, acse=30, dimse=60, network=60)
    watch = config.watch[0]
    assert (watch.pattern, watch.settle_seconds) == ("*", 1.0)
    pacs = config.destinations["PACS"]
    assert isinstance(pacs, DicomDestination)
    assert (pacs.calling_ae_title, pacs.max_associations, pacs.batch, pacs.max_pdu, pacs.tls) == \
        ("ROUTER", 1, 100, 131072, None)
    assert pacs.retry == Retry(delay=2, multiplier=2, cap=300, max_attempts=20)
    files = config.destinations["FILES"]
    assert isinstance(files, FolderDestination)
    assert (files.naming, files.retry) == ("{SOPInstanceUID}.dcm", Retry())


def test_a_partial_mapping_keeps_the_defaults_of_what_it_leaves_out(tmp_path):
    config = load_config(write(tmp_path, with_head("""\
        destinations:
          PACS:
            type: dicom
            ae_title: PACS
            host: pacs
            port: 104
            timeouts: {dimse: 300}
            retry: {max_attempts: 5}
        """)))
    pacs = config.destinations["PACS"]
    assert pacs.timeouts == Timeouts(dimse=300)
    assert pacs.retry == Retry(max_attempts=5)


def test_retry_waits_grow_to_the_cap():
    retry = Retry()
    assert [retry.wait(n) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert sum(retry.wait(n) for n in range(1, retry.max_attempts)) == 3810  # then dead


def test_listener_lists_become_tuples(tmp_path):
    config = load_config(write(tmp_path, with_head("""\
        listeners:
          - name: main
            ae_title: ROUTER
            port: 104
            allowed_calling_aets: ["CT*", MR1]
            transfer_syntaxes: [1.2.840.10008.1.2.1]
        """)))
    listener = config.listeners[0]
    assert listener.allowed_calling_aets == ("CT*", "MR1")
    assert listener.transfer_syntaxes == ("1.2.840.10008.1.2.1",)


def test_a_listener_can_refuse_unknown_sop_classes_and_name_its_transfer_syntaxes_in_order(tmp_path):
    config = load_config(write(tmp_path, with_head("""\
        listeners:
          - name: main
            ae_title: ROUTER
            port: 104
            transfer_syntaxes: [1.2.840.10008.1.2, 1.2.840.10008.1.2.1]
            accept_unknown_sop_classes: false
        """)))
    listener = config.listeners[0]
    assert listener.transfer_syntaxes == ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # the order is kept
    assert listener.accept_unknown_sop_classes is False


@pytest.mark.parametrize("line, problem", [
    ("accept_unknown_sop_classes: yes",
     "router.yaml:7: listeners[0].accept_unknown_sop_classes: must be true or false, not 'yes'"),
    ("transfer_syntaxes: [1.2.840.10008.1.2.1, explicit]",
     "router.yaml:7: listeners[0].transfer_syntaxes[1]: 'explicit' is not valid: A transfer syntax UID, digits "
     "and dots: 1.2.840.10008.1.2.1 is Explicit VR Little Endian."),
    ("transfer_syntaxes: []", "router.yaml:7: listeners[0].transfer_syntaxes: [] should be non-empty"),
])
def test_listener_transfer_syntax_and_sop_class_keys_are_checked(tmp_path, line, problem):
    text = HEAD + f"listeners:\n  - name: main\n    ae_title: ROUTER\n    port: 11112\n    {line}\n"
    assert one_problem(tmp_path, text) == problem


# ---- the command line ---------------------------------------------------------------------


def dicom_rules(*args, cwd: Path = ROOT):
    return run_dicom_rules(*args, cwd=cwd)


def test_check_config_accepts_the_example_configuration():
    result = dicom_rules("check-config", "examples/router.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stderr



def test_check_config_accepts_the_example_of_a_router_in_front_of_a_pacs_with_a_worklist_folder():
    result = dicom_rules("check-config", "examples/queries/router.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stderr
    config = load_config(ROOT / "examples" / "queries" / "router.yaml")
    assert config.destinations["WORKLIST"].path == str(ROOT / "examples" / "queries" / "worklist")

def test_check_config_reports_file_line_and_key_and_exits_1(tmp_path):
    write(tmp_path, HEAD + "listeners:\n  - name: main\n    ae_title: ROUTER\n    port: 70000\n")
    result = dicom_rules("check-config", "router.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "router.yaml:6" in result.stdout
    assert "listeners[0].port: must be at most 65535, not 70000" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_run_refuses_a_broken_configuration_with_exit_2_before_touching_anything(tmp_path):
    write(tmp_path, HEAD + "listeners:\n  - name: main\n    ae_title: ROUTER\n    port: 70000\n")
    result = dicom_rules("run", "router.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("dicom-rules: router.yaml:6: listeners[0].port: must be at most 65535")
    assert not (tmp_path / "var").exists()


def test_schema_prints_the_shipped_schema():
    import json

    from rulesengine.config import schema
    result = dicom_rules("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == schema()


def test_a_log_file_in_a_missing_folder_is_a_configuration_error(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text("storage: var\nrules: main.rules\nlog: {file: nowhere/router.log}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"router.yaml:3: log.file: the folder .*nowhere does not exist"):
        load_config(path)


# ---- worklist destinations ---------------------------------------------------------------------


def test_a_worklist_destination_is_a_folder_that_must_exist(tmp_path):
    (tmp_path / "worklists" / "CT").mkdir(parents=True)
    (tmp_path / "a-file").write_text("not a folder")
    path = write(tmp_path, """
        storage: var
        rules: main.rules
        destinations:
          WL: {type: worklist, path: worklists/CT}
    """)
    config = load_config(path)
    assert config.destinations["WL"] == WorklistDestination(name="WL", path=str(tmp_path / "worklists" / "CT"))
    assert config.destinations["WL"].type == "worklist"
    assert problems(tmp_path, """
        storage: var
        rules: main.rules
        destinations:
          GONE: {type: worklist, path: worklists/MR}
          FILE: {type: worklist, path: a-file}
          NAMING: {type: worklist, path: worklists/CT, naming: "{PatientID}.wl"}
          NO_PATH: {type: worklist}
    """) == [
        f"router.yaml:5: destinations.GONE.path: the worklist folder {tmp_path / 'worklists' / 'MR'} does not exist",
        f"router.yaml:6: destinations.FILE.path: {tmp_path / 'a-file'} is not a folder",
        "router.yaml:7: destinations.NAMING: unknown key 'naming'; known keys: type, path",
        "router.yaml:8: destinations.NO_PATH: needs path",
    ]
