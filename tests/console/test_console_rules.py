"""The Rules page: the rule files of the version the router runs (from the journal, as the
router recorded them), highlighted by the grammar's own lexer, each line with its anchor; how the
last reload went; the files on disk that differ. And the dry-run of an uploaded DICOM file:
what the rules in use do with it, with nothing sent, journaled or spooled; refused to a viewer,
and every hostile upload answered with a clear 400 or 413."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from starlette.testclient import TestClient

from helpers.console import USERS, ConsoleUnderTest, ServerThread, csrf_of
from helpers.files import bundled
from helpers.peers import free_port
from rulesengine.config import load_config
from rulesengine.console.app import create_app
from rulesengine.console.pages.rules import dry_run_report
from rulesengine.runtime.router_status import StatusReporter
from rulesengine.runtime.rules import RulesHolder, compile_rules

MAIN_RULES = """\
# What the router does with CT and MR.
import "lib.rules" as lib

rule "CT to PACS" {
  when DataSet.Modality == "CT"
  then
    set DataSet.InstitutionName = "Routed <here>"
    apply lib.stamp
    route to PACS
}

rule "MR to the archive" {
  when DataSet.Modality == "MR" and DataSet.Rows > 0
  then route to ARCHIVE
}
"""
LIB_RULES = """\
block stamp {
  set DataSet.StationName = "ROUTER"
}
"""
CT = bundled("CT_small.dcm")
MR = bundled("MR_small.dcm")


class RouterRules:
    """The console beside a router whose rules are recorded in the journal as the router records
    them (RulesHolder), with the router's status row (StatusReporter)."""

    def __init__(self, folder: Path, main_rules: str = MAIN_RULES):
        self.console = ConsoleUnderTest(folder)
        (folder / "main.rules").write_text(main_rules, encoding="utf-8")
        (folder / "lib.rules").write_text(LIB_RULES, encoding="utf-8")
        self.main, self.lib = "main.rules", "lib.rules"  # named from the configuration's folder
        self.holder = RulesHolder(self.console.config, self.console.journal)
        self.reporter = StatusReporter(SimpleNamespace(rules=self.holder, listeners=[], journal=self.console.journal),
                                       node="router-1", clock=self.console.clock)
        self.reporter.write()

    def storage_files(self) -> dict[str, int]:
        """Every file of the storage folder but the journal's database, with its size."""
        root = Path(self.console.storage.root)
        return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*")
                if path.is_file() and not path.name.startswith("journal.sqlite")}


@pytest.fixture
def router(tmp_path):
    return RouterRules(tmp_path)


def upload(client: TestClient, path: str, name: str | None = None, **fields):
    token = csrf_of(client.get("/rules").text)
    with open(path, "rb") as fh:
        return client.post("/rules/dry-run", data={"csrf_token": token, **fields},
                           files={"file": (name or os.path.basename(path), fh, "application/dicom")})


def api_upload(router: RouterRules, content: bytes, name: str = "x.dcm", user: str = "otto"):
    client, token = router.console.api_client(user)
    return client.post("/api/rules/dry-run", headers={"x-csrf-token": token}, files={"file": (name, content)})


def leftover_uploads() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("dicom-rules-upload-")}


# ---- the page ------------------------------------------------------------------------------------


def test_the_page_shows_the_rules_in_use_highlighted_with_an_anchor_per_line(router):
    page = router.console.client("vera").get("/rules")
    assert page.status_code == 200
    html = page.text
    version = router.holder.current.version
    assert version in html and "the version the router on router-1 runs" in html
    # Every line of both files has its anchor; the page links to each.
    for number in range(1, MAIN_RULES.count("\n") + 1):
        assert f'id="{router.main}:{number}"' in html and f'href="#{router.main}:{number}"' in html
    assert f'id="{router.lib}:2"' in html
    # Tokens as the grammar's lexer classes them: keywords, strings, comments, names, operators.
    assert '<span class="tok-keyword">rule</span> <span class="tok-string">&#34;CT to PACS&#34;</span>' in html
    assert '<span class="tok-comment"># What the router does with CT and MR.</span>' in html
    assert '<span class="tok-keyword">when</span> <span class="tok-name">DataSet</span>' in html
    assert '<span class="tok-operator">==</span>' in html and '<span class="tok-number">0</span>' in html
    # The rule file's text is escaped, never markup.
    assert "Routed &lt;here&gt;" in html and "Routed <here>" not in html
    assert "The rule files on disk hold this version." in html
    assert 'style="' not in html  # the CSP forbids inline styles: the classes are in console.css
    css = router.console.client().get("/static/console.css").text
    assert all(f".tok-{kind}" in css for kind in ("keyword", "string", "comment", "number", "regex", "tag"))
    # A viewer sees no upload form; an operator does.
    assert 'action="/rules/dry-run"' not in html
    assert 'action="/rules/dry-run"' in router.console.client("otto").get("/rules").text
    assert '<a href="/rules">Rules</a>' in html


def test_the_api_gives_the_version_its_files_and_the_router(router):
    client, _ = router.console.api_client("vera")
    answer = client.get("/api/rules").json()
    assert answer["version"] == router.holder.current.version
    assert answer["router"]["node"] == "router-1" and answer["router"]["running"] is True
    assert [(f["name"], f["text"]) for f in answer["files"]] == [(router.main, MAIN_RULES), (router.lib, LIB_RULES)]
    assert answer["disk"]["same"] is True and answer["disk_files"] == []


def test_a_refused_reload_shows_its_findings_linked_to_the_changed_file_on_disk(router, tmp_path):
    in_use = router.holder.current.version
    broken = MAIN_RULES.replace('route to ARCHIVE', 'route to NOWHERE')
    (tmp_path / "main.rules").write_text(broken, encoding="utf-8")
    assert router.holder.reload() is False
    router.reporter.write()
    html = router.console.client("vera").get("/rules").text
    assert in_use in html  # the version in use stays what it was
    assert "The rule files on disk differ from the version in use" in html and f"changed: {router.main}" in html
    line = broken.splitlines().index("  then route to NOWHERE") + 1
    assert f'<a href="#disk:{router.main}:{line}">{router.main}:{line}</a>' in html
    assert f'id="disk:{router.main}:{line}"' in html and "refused; the rules in use stay in place" in html
    assert "NOWHERE" in html
    finding = router.console.client("vera").get("/api/rules").json()["last_reload"]["findings"][0]
    assert finding["line"] == line and finding["anchor"] == f"disk:{router.main}:{line}"
    # A dry-run still follows the version in use, compiled from the journal's files of it.
    report = api_upload(router, Path(MR).read_bytes()).json()
    assert report["rules"].startswith(f"version {in_use}, in use, compiled from the journal")
    assert report["report"]["destinations"] == ["ARCHIVE"]


def test_without_a_router_the_latest_recorded_version_is_shown(tmp_path):
    router = RouterRules(tmp_path)
    router.console.journal.write_status("router-1", {}, now=0)  # a status that names no version
    html = router.console.client("vera").get("/rules").text
    assert "the version the journal recorded last" in html and router.holder.current.version in html


# ---- the dry-run --------------------------------------------------------------------------------


def test_a_dry_run_of_real_files_reports_the_rules_fired_and_the_edits_and_does_nothing(router):
    before = (router.storage_files(), router.console.journal.counts(), router.console.journal.counters(),
              router.console.journal.search_instances())
    uploads_before = leftover_uploads()
    client = router.console.client("otto")
    page = upload(client, CT)
    assert page.status_code == 200, page.text
    html = page.text
    assert "Dry-run of CT_small.dcm" in html and "route" in html
    assert f'<a href="#{router.main}:4">CT to PACS</a> (line 4)' in html
    assert "DataSet.InstitutionName" in html and "Routed &lt;here&gt;" in html
    assert "DataSet.StationName" in html and f'href="#{router.lib}:2"' in html  # the edit of the imported block
    assert "rule &#39;MR to the archive&#39; (line 12): did not fire" in html
    assert "DataSet.Modality == &#34;CT&#34;  -&gt; true" in html
    assert f'id="{router.main}:1"' in html  # the rules are shown below the report
    # The API twin answers the same report.
    answer = api_upload(router, Path(MR).read_bytes(), "MR_small.dcm")
    assert answer.status_code == 200, answer.text
    report = answer.json()["report"]
    assert report["outcome"] == "route" and report["destinations"] == ["ARCHIVE"]
    assert [(r["name"], r["line"], r["anchor"]) for r in report["rules_fired"]] == [
        ("MR to the archive", 12, f"{router.main}:12")]
    assert report["edits"] == [] and report["file"] == "MR_small.dcm"
    assert any("DataSet.Rows > 0  -> true  (DataSet.Rows is 64)" in line for line in report["explain_lines"])
    assert "rules fired: 'MR to the archive' (line 12)" in report["text"]
    ct = api_upload(router, Path(CT).read_bytes()).json()["report"]
    assert {(e["path"], e["new"]) for e in ct["edits"]} == {("DataSet.InstitutionName", "Routed <here>"),
                                                            ("DataSet.StationName", "ROUTER")}
    # Nothing was sent, journaled, spooled or left behind; who looked is in the audit log.
    after = (router.storage_files(), router.console.journal.counts(), router.console.journal.counters(),
             router.console.journal.search_instances())
    assert after == before
    assert not list(router.console.folder.glob("out/**/*.dcm"))  # the folder destinations got nothing
    assert leftover_uploads() == uploads_before
    audit = [(row["user"], row["action"], row["target"], row["result"]) for row in router.console.journal.audit_log()
             if row["action"] == "rules dry-run"]
    assert ("otto", "rules dry-run", "CT_small.dcm", "ok: route") in audit and len(audit) == 3


def test_a_viewer_may_not_upload(router):
    client = router.console.client("vera")
    token = csrf_of(client.get("/rules").text)
    answer = client.post("/rules/dry-run", data={"csrf_token": token}, files={"file": ("CT.dcm", Path(CT).read_bytes())})
    assert answer.status_code == 403 and "needs the role operator" in answer.text
    api = api_upload(router, Path(CT).read_bytes(), user="vera")
    assert api.status_code == 403 and api.json()["error"] == "/api/rules/dry-run needs the role operator; vera is viewer"
    denied = [row for row in router.console.journal.audit_log() if row["result"].startswith("denied")]
    assert {row["action"] for row in denied} == {"POST /rules/dry-run", "POST /api/rules/dry-run"}


def test_an_upload_without_the_csrf_token_is_refused(router):
    client = router.console.client("otto")
    client.get("/rules")
    answer = client.post("/rules/dry-run", files={"file": ("CT.dcm", Path(CT).read_bytes())})
    assert answer.status_code == 403 and "CSRF" in answer.text
    # A token sent as a file part is no token.
    token = csrf_of(client.get("/rules").text)
    answer = client.post("/rules/dry-run", files={"file": ("CT.dcm", Path(CT).read_bytes()),
                                                  "csrf_token": ("token.txt", token.encode())})
    assert answer.status_code == 403


@pytest.mark.parametrize("content, expected", [
    (b"", "not a DICOM file (no DICM header and no SOP instance found)"),
    (b"this is no DICOM file\n" * 20, "not a DICOM file (no DICM header and no SOP instance found)"),
    (Path(CT).read_bytes()[:30000], "the file is truncated: the pixel data declares 32768 bytes, 23700 remain"),
    (Path(bundled("DICOMDIR")).read_bytes(), "a DICOMDIR (a media directory) is not an instance to route"),
], ids=["empty", "not-dicom", "truncated", "dicomdir"])
def test_a_file_the_router_would_not_take_is_a_clear_400(router, content, expected):
    uploads_before = leftover_uploads()
    answer = api_upload(router, content, "odd.dcm")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.startswith("odd.dcm: the router would not take this file: ") and expected in error
    assert "Traceback" not in error and tempfile.gettempdir() not in error
    assert leftover_uploads() == uploads_before
    page = router.console.client("otto")
    token = csrf_of(page.get("/rules").text)
    shown = page.post("/rules/dry-run", data={"csrf_token": token}, files={"file": ("odd.dcm", content)})
    assert shown.status_code == 400 and "odd.dcm: " in shown.text


def test_a_hostile_file_name_is_shown_escaped_and_never_used_as_a_path(router, tmp_path):
    name = "../../<img src=x onerror=alert(1)>.dcm"
    page = upload(router.console.client("otto"), CT, name=name)
    assert page.status_code == 200
    assert "Dry-run of ../../&lt;img src=x onerror=alert(1)&gt;.dcm" in page.text and "<img" not in page.text
    answer = api_upload(router, Path(CT).read_bytes(), name="..\\..\\evil\x1b[31m.dcm")
    assert answer.json()["report"]["file"] == "..\\..\\evil[31m.dcm"  # control characters dropped
    # Had the name been used as a path, from the temporary folder or the storage folder:
    for folder in (tempfile.gettempdir(), "/", router.console.storage.root, str(tmp_path)):
        assert not os.path.exists(os.path.join(folder, "<img src=x onerror=alert(1)>.dcm"))
    assert not list(tmp_path.glob("**/*onerror*")) and not list(tmp_path.glob("**/*evil*"))


def test_the_file_field_is_needed_once_and_as_a_file(router):
    client, token = router.console.api_client("otto")
    headers = {"x-csrf-token": token}
    missing = client.post("/api/rules/dry-run", headers=headers, files={"other": ("a.dcm", b"x")})
    assert missing.status_code == 400 and "unknown parameter 'other'" in missing.json()["error"]
    missing = client.post("/api/rules/dry-run", headers=headers, data={})
    assert missing.status_code == 400 and missing.json()["error"].startswith("file is needed")
    json_body = client.post("/api/rules/dry-run", headers=headers, json={"file": "CT_small.dcm"})
    assert json_body.status_code == 400 and "file must be an uploaded file" in json_body.json()["error"]
    text = client.post("/api/rules/dry-run", headers=headers, data={"file": "CT_small.dcm"},
                       files={"other_file": ("a", b"")})
    assert text.status_code == 400
    ct = Path(CT).read_bytes()
    two = client.post("/api/rules/dry-run", headers=headers, files=[("file", ("a.dcm", ct)), ("file", ("b.dcm", ct))])
    assert two.status_code == 400 and two.json()["error"] == "file is given 2 times; give it once"
    garbled = client.post("/api/rules/dry-run", headers={**headers, "content-type": "multipart/form-data"},
                          content=b"--x\r\n")
    assert garbled.status_code == 400 and garbled.json()["error"].startswith("the form cannot be read")


def test_an_upload_over_the_bound_is_413_while_it_is_read(tmp_path):
    router = RouterRules(tmp_path)
    config = router.console.config
    bounded = replace(config, console=replace(config.console, upload_max_mb=3))
    router.console.app = create_app(bounded, clock=router.console.clock, users=USERS)
    client, token = router.console.api_client("otto")
    big = b"\0" * (3 << 20)
    declared = client.post("/api/rules/dry-run", headers={"x-csrf-token": token}, files={"file": ("big.dcm", big)})
    assert declared.status_code == 413
    assert declared.json()["error"] == ("the upload is larger than 3 MiB, the console's bound "
                                        "(console: upload_max_mb in the configuration)")
    # Over a real socket, a body sent in chunks (no Content-Length) is refused at the bound:
    # the answer comes while the body is still unfinished, so it was never buffered whole.
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    port = free_port()
    with ServerThread(router.console.app, port), socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /api/rules/dry-run HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\nX-CSRF-Token: " + token.encode()
                     + b"\r\nCookie: " + cookie.encode() + b"\r\n\r\n")
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.dcm"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"\0" * 65536
        for _ in range(3 * 16 + 2):  # just over 3 MiB, and the body never ends: no last chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    # Under the bound, a file larger than the 1 MiB of other bodies is taken: a CT of 2 MiB.
    ct = pydicom.dcmread(CT)
    ct.Rows = ct.Columns = 1024
    ct.PixelData = bytes(2 << 20)
    ct.save_as(tmp_path / "large.dcm")
    page = upload(router.console.client("otto"), str(tmp_path / "large.dcm"))
    assert page.status_code == 200, page.text
    assert "Dry-run of large.dcm" in page.text
    # Another route keeps the small bound of every body.
    other = client.post("/api/queues/retry", headers={"x-csrf-token": token}, content=b"{" + b" " * (1 << 20) + b"}")
    assert other.status_code == 413


def test_the_openapi_document_describes_the_upload(router):
    document = router.console.client("vera").get("/api/openapi.json").json()
    body = document["paths"]["/api/rules/dry-run"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["format"] == "binary" and body["required"] == ["file"]
    assert "get" in document["paths"]["/api/rules"]


def test_without_rules_in_the_journal_the_dry_run_compiles_the_configured_files_and_says_so(tmp_path):
    console = ConsoleUnderTest(tmp_path)
    (tmp_path / "main.rules").write_text(MAIN_RULES, encoding="utf-8")
    (tmp_path / "lib.rules").write_text(LIB_RULES, encoding="utf-8")
    client, token = console.api_client("otto")
    answer = client.post("/api/rules/dry-run", headers={"x-csrf-token": token},
                         files={"file": ("CT_small.dcm", Path(CT).read_bytes())}).json()
    assert answer["rules"].endswith("compiled from the configured rule files (no rules are recorded in the journal)")
    assert answer["report"]["destinations"] == ["PACS"]
    assert console.journal.latest_ruleset() is None  # the console records no rules
    page = console.client("vera").get("/rules").text
    assert "No router has recorded rules in the journal yet: the configured rule files." in page
    assert 'id="main.rules:4"' in page
    # Rules that do not compile: a clear refusal, the upload not evaluated.
    (tmp_path / "main.rules").write_text('rule "x" { then route to NOWHERE }\n', encoding="utf-8")
    refused = client.post("/api/rules/dry-run", headers={"x-csrf-token": token},
                          files={"file": ("CT_small.dcm", Path(CT).read_bytes())})
    assert refused.status_code == 409 and "unknown destination 'NOWHERE'" in refused.json()["error"]


HASHING_RULES = """\
rule "pseudonymise" {
  when DataSet.Modality == "CT"
  then
    set DataSet.PatientID = hash(DataSet.PatientID, 16)
    route to PACS
}
"""


def _hashed_patient_id(console) -> tuple[str, str | None]:
    answer = api_upload(console, Path(CT).read_bytes())
    assert answer.status_code == 200, answer.text
    [edit] = [e for e in answer.json()["report"]["edits"] if e["path"] == "DataSet.PatientID"]
    return edit["new"], answer.json()["note"]


def test_a_dry_run_hashes_with_the_router_s_key_when_the_console_can_read_it(tmp_path):
    (tmp_path / "keyed").mkdir()
    (tmp_path / "unkeyed").mkdir()
    keyed = RouterRules(tmp_path / "keyed", HASHING_RULES)
    value, note = _hashed_patient_id(keyed)
    assert note is None
    # What the router makes: the rules compiled with the configuration and its key.
    expected = dry_run_report(compile_rules(load_config(keyed.console.config_path)), CT, "CT", 0.0,
                              keyed.console.config)
    assert value == next(e["new"] for e in expected["edits"] if e["path"] == "DataSet.PatientID")

    unkeyed = RouterRules(tmp_path / "unkeyed", HASHING_RULES)
    (tmp_path / "unkeyed" / "hash.key").unlink()  # the console, started after, cannot read it
    unkeyed.console.app = create_app(unkeyed.console.config, clock=unkeyed.console.clock, users=USERS)
    other, note = _hashed_patient_id(unkeyed)
    assert other != value and "development key" in note and "hash.key" in note
