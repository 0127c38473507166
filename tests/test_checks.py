"""Findings of the checks and lint passes: code, severity, position and wording."""

from __future__ import annotations

import pytest

import rulesengine
from rulesengine.lang.api import analyse
from rulesengine.lang.loader import load_program

from helpers.files import write

# (source, code, severity, line, column, words the message or hint must contain)
CASES = [
    # syntax, in plain words
    ('rule "a" { when DataSet.Modality = "CT" then drop }', "syntax", "error", 1, 34, "write =="),
    ("rule \"a\" { when DataSet.Modality == 'CT' then drop }", "syntax", "error", 1, 37, "double quotes"),
    ('rule "a" {\n  when DataSet.Modality == "CT"\n  drop\n}', "syntax", "error", 3, 3, "expected 'then'"),
    ('rule "a" { then drop', "syntax", "error", 1, 21, "ended early"),
    ('rule "a" { when DataSet.Modality == "CT" AND DataSet.Rows == 1 then drop }', "syntax", "error", 1, 42,
     "lower case"),
    # names and paths
    ('rule "a" { when DataSet.PatientsName == "x" then drop }', "unknown-keyword", "error", 1, 25,
     "did you mean PatientName"),
    ('rule "a" { when DateSet.PatientName == "x" then drop }', "unknown-name", "error", 1, 17, "DataSet"),
    ('rule "a" { when Association.CallingAe == "x" then drop }', "unknown-field", "error", 1, 29, "CallingAET"),
    ('rule "a" { when DataSet.Modality == CT then drop }', "unknown-name", "error", 1, 37, '"CT"'),
    ('rule "a" { when DataSet.CommandField == 1 then drop }', "bad-path", "error", 1, 25, "CommandSet."),
    ('rule "a" { when DataSet.ScheduledProcedureStepSequence.Modality == "CT" then drop }', "bad-path", "error",
     1, 25, "[1]"),
    ('rule "a" { when DataSet.PatientName.Modality == "CT" then drop }', "bad-path", "error", 1, 25,
     "not a sequence"),
    # types and VRs
    ('rule "a" { when DataSet.StudyDate < "2024-01-01" then drop }', "bad-value", "error", 1, 37, "DA"),
    ('rule "a" { when DataSet.StudyDate == 20240101 then drop }', "type-mismatch", "error", 1, 38, "string"),
    ('rule "a" { then set DataSet.StudyDate = "yesterday" }', "bad-value", "error", 1, 41, "YYYYMMDD"),
    ('rule "a" { then set DataSet.StudyInstanceUID = 12345 }', "bad-value", "error", 1, 48, "not a UID"),
    ('rule "a" { then set DataSet.SOPClassUID = DataSet.Rows }', "type-mismatch", "error", 1, 43, "UID"),
    ('rule "a" { when DataSet.Rows == "512" then drop }', "type-mismatch", "error", 1, 33, "write 512"),
    ('rule "a" { then set DataSet.StationName = "THIS NAME IS FAR TOO LONG" }', "bad-value", "error", 1, 43,
     "16"),
    ('rule "a" { then set DataSet.Rows = DataSet.PatientID }', "type-mismatch", "warning", 1, 36, "number"),
    ('rule "a" { when DataSet.Modality then drop }', "not-a-condition", "error", 1, 17, "exists"),
    ('rule "a" { when DataSet.PixelData == "x" then drop }', "type-mismatch", "error", 1, 17, "binary"),
    ('rule "a" { when DataSet.OtherPatientIDsSequence[*].PatientID == "x" then drop }', "type-mismatch", "error",
     1, 17, "any/all"),
    ('rule "a" { then set FileMeta.TransferSyntaxUID = "1.2.840.10008.1.2" }', "read-only", "error", 1, 21,
     "cannot be edited"),
    ('rule "a" { then set Association.CallingAET = "X" }', "read-only", "error", 1, 21, "cannot be edited"),
    # regexes and functions
    ('rule "a" { when DataSet.PatientID matches /([0-9]/ then drop }', "bad-regex", "error", 1, 44,
     "regular expression"),
    ('rule "a" { then log lowercase(DataSet.PatientID) }', "unknown-function", "error", 1, 21, "lower"),
    ('rule "a" { then log substr(DataSet.PatientID) }', "arity", "error", 1, 21, "2 to 3"),
    ('rule "a" { then log replace(DataSet.PatientID, "-", "") }', "type-mismatch", "error", 1, 48, "regular"),
    # blocks and actions in the wrong place
    ('block b { route to A }', "block-action", "error", 1, 11, "whole document"),
    ('rule "a" { then copy to A { drop } }', "block-action", "error", 1, 29, "whole document"),
    ('rule "a" { then apply nothing.here }', "unknown-block", "error", 1, 17, "imported"),
    ('rule "a" { then for each s in DataSet.OtherPatientIDsSequence { set s = "x" } }', "bad-target", "error",
     1, 69, "s.Keyword"),
    ('rule "a" { then { let x = 1 \n let x = 2 } }', "duplicate-name", "error", 2, 6, "already"),
    # whole-file passes
    ('rule "a" { then drop }\nrule "b" { then route to A }', "unreachable", "warning", 2, 6, "ends evaluation"),
    ('rule "a" { when DataSet.Modality == "CT" and DataSet.Modality == "MR" then route to A }\n'
     'rule "z" { then route to Z }', "unreachable", "warning", 1, 17, "two different values"),
    ('rule "a" { when DataSet.Modality in ["CT", "MR"] then reject "no" }\n'
     'rule "b" { when DataSet.Modality == "CT" and DataSet.Rows > 1 then route to A }\n'
     'rule "z" { then route to Z }', "shadowed", "warning", 2, 6, "rule 'a'"),
    ('rule "a" { when DataSet.Modality == "CT" then route to A }', "no-destination", "warning", 1, 6,
     "no_destination"),
    ('rule "a" { then stop }\nrule "b" { then route to A }', "no-destination", "warning", 1, 17, "before any rule"),
]


def findings(source: str, destinations=None, filename: str = "t.rules"):
    program = load_program(text=source, filename=filename)
    return analyse(program, destinations).diagnostics


@pytest.mark.parametrize("source,code,severity,line,column,words", CASES, ids=[c[1] + str(i) for i, c in
                                                                                enumerate(CASES)])
def test_finding(source, code, severity, line, column, words):
    matching = [d for d in findings(source) if d.code == code]
    assert matching, f"no {code} finding; got {[d.one_line() for d in findings(source)]}"
    d = matching[0]
    assert (d.severity.value, d.span.line, d.span.column) == (severity, line, column), d.one_line()
    assert words in d.message + " " + (d.hint or ""), d.one_line()
    assert d.span.file == "t.rules"


def test_a_clean_file_has_no_findings():
    source = ('rule "ct" {\n  when DataSet.Modality == "CT" and DataSet.StudyDate >= "20240101"\n'
              '  then route to PACS\n}\nrule "rest" {\n  then route to ARCHIVE\n}\n')
    assert findings(source) == []


def test_unknown_destinations_only_when_destinations_are_known():
    source = 'rule "a" { then route to PACS, ARCHVE }'
    assert not [d for d in findings(source) if d.code == "unknown-destination"]
    (d,) = [d for d in findings(source, ["PACS", "ARCHIVE"]) if d.code == "unknown-destination"]
    assert (d.span.line, d.span.column) == (1, 32) and d.hint == "did you mean ARCHIVE?"


def test_route_back_to_the_sender_is_flagged_unless_excluded_or_explicit():
    destinations = {"PACS": {"ae_title": "PACS_AE"}}
    loops = [d for d in findings('rule "a" { then route to PACS }', destinations) if d.code == "loop"]
    assert loops and "PACS_AE" in loops[0].message
    excluded = 'rule "a" { when Association.CallingAET != "PACS_AE" then route to PACS }\nrule "z" { then drop }'
    assert not [d for d in findings(excluded, destinations) if d.code == "loop"]
    explicit = 'rule "a" { then route back to PACS }'
    assert not [d for d in findings(explicit, destinations) if d.code == "loop"]


@pytest.mark.parametrize("messages, words", [
    ("", "a document back to its sender: PACS is AE title PACS_AE, and documents from PACS_AE"),
    ("on C-FIND ", "a query back to its sender: PACS is AE title PACS_AE, and queries from PACS_AE"),
    ("on C-MOVE, C-GET ", "a retrieval back to its sender: PACS is AE title PACS_AE, and retrievals from PACS_AE"),
    ("on C-FIND, C-MOVE ", "a request back to its sender: PACS is AE title PACS_AE, and requests from PACS_AE"),
    ("on C-STORE, N-SET ", "a document or request back to its sender: PACS is AE title PACS_AE, and documents or "
                           "requests from PACS_AE"),
])
def test_the_loop_warning_names_what_the_rule_routes(messages, words):
    destinations = {"PACS": {"ae_title": "PACS_AE"}}
    (loop,) = [d for d in findings(f'rule "a" {messages}{{ then route to PACS }}', destinations) if d.code == "loop"]
    assert loop.message == f"this route can send {words} also match; the router will not send them back"


def test_imports_tables_and_their_errors(run_in):
    write(run_in / "lib.rules", 'block clean {\n  delete DataSet.PatientBirthDate\n}\n')
    write(run_in / "sites.csv", "aet,site\nCT1,A\nCT1,B\n")
    write(run_in / "main.rules", 'import "lib.rules" as lib\nimport "missing.rules" as gone\n'
                                  'table sites from "sites.csv" key "aet"\n'
                                  'rule "a" { then {\n apply lib.clean\n apply lib.dirty\n route to A } }\n')
    codes = {(d.code, d.span.line if d.span else None) for d in rulesengine.check_file("main.rules")}
    assert ("import", 2) in codes  # missing.rules cannot be read
    assert ("table", 3) in codes  # key CT1 twice
    assert ("unknown-block", 6) in codes
    assert not any(code == "unknown-block" and line == 5 for code, line in codes)


def test_import_cycles_and_rules_in_libraries(run_in):
    write(run_in / "a.rules", 'import "b.rules" as b\nrule "x" { then drop }\n')
    write(run_in / "b.rules", 'import "a.rules" as a\n')
    (cycle,) = [d for d in rulesengine.check_file("a.rules") if d.is_error]
    assert "cycle: a.rules -> b.rules -> a.rules" in cycle.message and cycle.span.file == "b.rules"
    write(run_in / "main.rules", 'import "a.rules" as a\nrule "y" { then drop }\n')
    messages = [d.message for d in rulesengine.check_file("main.rules")]
    assert any("a.rules has rules" in m for m in messages)


def test_errors_in_an_imported_file_are_located_there(run_in):
    write(run_in / "lib.rules", 'block b {\n  delete DataSet.PatientsBirthDate\n}\n')
    write(run_in / "main.rules", 'import "lib.rules" as lib\nrule "a" { then { apply lib.b\n route to A } }\n')
    (d,) = [d for d in rulesengine.check_file("main.rules") if d.is_error]
    assert (d.span.file, d.span.line, d.code) == ("lib.rules", 2, "unknown-keyword")


def test_tracebacks_never_reach_the_user_on_odd_input():
    odd = ['', '#', 'rule', 'rule "" {}', '}}}', 'rule "a" { then set DataSet.(GGGG,0010) = 1 }',
           'rule "a" { then log "\\q" }', 'rule "a" { then set DataSet.(0008,"X",10) = 1 }',
           'rule "a" { when DataSet.X[0] == 1 then drop }', "rule \"a\" { then log \"\u00e9\u4e2d\" }",
           'rule "a" { when DataSet.**.** == 1 then drop }', 'rule "a" { when DataSet.Modality matches /x/q then drop }']
    harmless = {'', '#', "rule \"a\" { then log \"\u00e9\u4e2d\" }"}
    for source in odd:
        found = findings(source)
        for d in found:
            assert d.message and (d.span is None or d.span.line >= 1), (source, d)
        assert any(d.is_error for d in found) == (source not in harmless), (source, found)


# ---- diagnostics for what ported rule files get wrong silently --------------------------

_ROUTES_THEN_CATCH_ALL = 'rule "ct" {{ when DataSet.Modality == "CT" then {body} }}\nrule "rest" {{ then {catch} }}'

# (source, code, severity, line, column, words the message or hint must contain)
PORTING_CASES = [
    (_ROUTES_THEN_CATCH_ALL.format(body="route to A", catch='quarantine "unrouted"'), "catch-all", "warning", 2, 20,
     "rule 'ct' (line 1) routed"),
    (_ROUTES_THEN_CATCH_ALL.format(body="route to A", catch="drop"), "catch-all", "warning", 2, 20,
     'fallback rule "rest" { ... }'),
    (_ROUTES_THEN_CATCH_ALL.format(body="copy to A", catch='reject "no"'), "catch-all", "warning", 2, 20,
     "end each rule that routes with stop"),
    ('rule "a" { when DataSet.ImageType contains "SAVE" then route to A }', "contains-values", "warning", 1, 17,
     "any v in DataSet.ImageType: v contains \"SAVE\""),
    ('rule "a" { when DataSet.ImageType contains "SAVE" then route to A }', "contains-values", "warning", 1, 17,
     '"SAVE" in DataSet.ImageType'),
    ('rule "a" { when DataSet.ImageType not contains "SAVE" then route to A }', "contains-values", "warning", 1, 17,
     'all v in DataSet.ImageType: v not contains "SAVE"'),
    ('rule "a" { when DataSet.ImageType contains "localizer" then route to A }', "contains-values", "warning", 1, 17,
     "not a code string value"),
    ('rule "a" { when DataSet.OtherPatientIDs contains " 12" then route to A }', "contains-values", "warning", 1,
     17, "spaces at an end"),
    ('rule "a" { when DataSet.AccessionNumber == "" then route to A }', "empty-string", "warning", 1, 17,
     "empty DataSet.AccessionNumber or missing DataSet.AccessionNumber"),
    ('rule "a" { when "" == DataSet.AccessionNumber then route to A }', "empty-string", "warning", 1, 17,
     "is false when DataSet.AccessionNumber is missing"),
    ('rule "a" { when DataSet.AccessionNumber != "" then route to A }', "empty-string", "warning", 1, 17,
     "exists DataSet.AccessionNumber and not empty DataSet.AccessionNumber"),
    ('rule "a" { when DataSet.Modality == "CT" and not (DataSet.PatientID == "") then route to A }', "empty-string",
     "warning", 1, 51, "missing"),
    # tags as other tools write them: a comparison that parses, but compares a list or a number
    ('rule "a" { when [0028,0301] == "YES" then route to A }', "type-mismatch", "error", 1, 17,
     "write DataSet.(0028,0301)"),
    ('rule "a" { when 00180015 == "CHEST" then route to A }', "type-mismatch", "error", 1, 17,
     "write DataSet.(0018,0015)"),
    # forms from other tools: the syntax error stays, with the rewrite
    ('rule "a" { when DataSet.[0028,0301] == "YES" then route to A }', "syntax", "error", 1, 25,
     "write DataSet.(0028,0301)"),
    ('rule "a" { when DataSet.00180015 == "CHEST" then route to A }', "syntax", "error", 1, 25,
     "write DataSet.(0018,0015)"),
    ('rule "a" { when DataSet.(0010-0010) == "X" then route to A }', "syntax", "error", 1, 25,
     "write DataSet.(0010,0010)"),
    ('rule "a" { when DataSet.(7fe0.0010) == "X" then route to A }', "syntax", "error", 1, 25,
     "write DataSet.(7FE0,0010)"),
    ('rule "a" { when [0008,0060].equals("CT") then route to A }', "syntax", "error", 1, 28,
     'write DataSet.(0008,0060) == "CT"'),
    ('rule "a" { when Modality.equals("CT") then route to A }', "syntax", "error", 1, 32,
     'write DataSet.Modality == "CT"'),
    ('rule "a" { when Modality.equalsIgnoreCase("Ct") then route to A }', "syntax", "error", 1, 42,
     'write lower(DataSet.Modality) == "ct"'),
    ('rule "a" { when SeriesDescription.containsIgnoreCase("LOC") then route to A }', "syntax", "error", 1, 53,
     'write lower(DataSet.SeriesDescription) contains "loc"'),
    ('rule "a" { when PatientID.startsWith("TEST") then route to A }', "syntax", "error", 1, 37,
     'write DataSet.PatientID startswith "TEST"'),
    ('rule "a" { when SeriesDescription.matches(".*LOC.*") then route to A }', "syntax", "error", 1, 35,
     "write DataSet.SeriesDescription matches /.*LOC.*/"),
    ('rule "a" { when DataSet.PatientName.lower() == "x" then route to A }', "syntax", "error", 1, 42,
     "write lower(DataSet.PatientName)"),
    ('rule "a" { then set DataSet.PatientName = @lowercase(DataSet.PatientName) }', "syntax", "error", 1, 43,
     "lower(DataSet.Keyword)"),
    ('rule "a" { then set DataSet.StudyInstanceUID = @hashuid(@UIDROOT, this) }', "syntax", "error", 1, 48,
     "uid(DataSet.Keyword)"),
    # `*` multiplies: the parser stops at the comparison after the product.
    ('rule "a" { when DataSet.Modality == "CT" * DataSet.Rows > 1 then route to A }', "syntax", "error", 1, 57,
     "write and"),
    ('rule "a" { when !(DataSet.Rows > 1) then route to A }', "syntax", "error", 1, 17, "write not"),
    ('rule "a" { when DataSet.Modality == "CT" && DataSet.Rows > 1 then route to A }', "syntax", "error", 1, 42,
     "write and"),
    ('rule "a" { when DataSet.Modality == "CT" || DataSet.Rows > 1 then route to A }', "syntax", "error", 1, 42,
     "write or"),
    ('rule "a" { when DataSet.Modality ~= "CT" then route to A }', "syntax", "error", 1, 34, "write !="),
    # Lua's tags["Modality"] parses (a computed index): the unknown name says what to write.
    ('rule "a" { when tags["Modality"] == "CT" then route to A }', "unknown-name", "error", 1, 17,
     "write DataSet.Modality"),
    ('REMOVE PatientID', "syntax", "error", 1, 1, "delete DataSet.PatientID"),
    ('rule "a" { then {\n  BLANK PatientName\n} }', "syntax", "error", 2, 3, "blank DataSet.PatientName"),
    ('rule "a" { then {\n  ADD PatientIdentityRemoved YES\n} }', "syntax", "error", 2, 3,
     'set DataSet.PatientIdentityRemoved = "YES"'),
    ('rule "a" { then {\n  REPLACE PatientID var:id\n} }', "syntax", "error", 2, 3, "set DataSet.PatientID = "),
    ('rule "a" { then {\n  JITTER StudyDate var:jitter\n} }', "syntax", "error", 2, 3,
     "shift_date(DataSet.StudyDate, DAYS)"),
    ('KEEP PatientSex', "syntax", "error", 1, 1, "nothing to write"),
    # CTP DicomAnonymizer script elements, deid recipe headers
    ('<e en="T" t="00100010" n="PatientName">@empty()</e>', "syntax", "error", 1, 1, "blank DataSet.PatientName"),
    ('block b {\n  <e en="T" t="00080050" n="AccessionNumber">@hash(this,16)</e>\n}', "syntax", "error", 2, 3,
     "set DataSet.AccessionNumber = hash(DataSet.AccessionNumber)"),
    ('<e en="T" t="00120062" n="PatientIdentityRemoved">YES</e>', "syntax", "error", 1, 1,
     'set DataSet.PatientIdentityRemoved = "YES"'),
    ('<e en="T" t="00180015">@remove()</e>', "syntax", "error", 1, 1, "delete DataSet.(0018,0015)"),
    ('<e en="F" t="00100020" n="PatientID">@remove()</e>', "syntax", "error", 1, 1, "nothing to write"),
    ('FORMAT dicom\n%header\nREMOVE PatientID', "syntax", "error", 1, 1, "deid recipe's header"),
    # conditions joined with + (CTP's or)
    ('rule "a" { when (DataSet.Modality == "CT") + (DataSet.Rows > 1) then route to A }', "type-mismatch", "error",
     1, 18, "write or"),
]


@pytest.mark.parametrize("source,code,severity,line,column,words", PORTING_CASES,
                         ids=[c[1] + str(i) for i, c in enumerate(PORTING_CASES)])
def test_porting_finding(source, code, severity, line, column, words):
    test_finding(source, code, severity, line, column, words)


@pytest.mark.parametrize("source", [
    # routes that stop, a catch-all with a condition, a catch-all before any route
    'rule "ct" { when DataSet.Modality == "CT" then {\n route to A\n stop } }\nrule "rest" { then quarantine }',
    'rule "ct" { when DataSet.Modality == "CT" then route to A }\n'
    'rule "odd" { when missing DataSet.PatientID then quarantine }\nrule "z" { then route to Z }',
    'rule "first" { then quarantine }',
    'rule "ct" { when DataSet.Modality == "CT" then drop }\nrule "rest" { then drop }',
    # contains on one value, a whole defined term, the forms the hint suggests
    'rule "a" { when DataSet.StudyDescription contains "SAVE" then route to A }',
    'rule "a" { when DataSet.ImageType contains "AXIAL" then route to A }',
    'rule "a" { when DataSet.ImageType contains "SCREEN SAVE" then route to A }',
    'rule "a" { when "SAVE" in DataSet.ImageType then route to A }',
    'rule "a" { when any v in DataSet.ImageType: v contains "SAVE" then route to A }',
    'rule "a" { when DataSet.ImageType[3] contains "SAVE" then route to A }',
    # the missing case said beside the test for ""
    'rule "a" { when missing DataSet.PatientID or DataSet.PatientID == "" then route to A }',
    'rule "a" { when empty DataSet.PatientID or missing DataSet.PatientID then route to A }',
    'rule "a" { when exists DataSet.PatientID and DataSet.PatientID != "" then route to A }',
    'rule "a" { when Association.CallingAET == "" then route to A }',
    'rule "a" { when DataSet.PatientID == "X" then route to A }',
    # numbers and dates that are not tags
    'rule "a" { when DataSet.StudyDate == "20240101" then route to A }',
    'rule "a" { when DataSet.Rows == 512 then route to A }',
    'rule "a" { when DataSet.Modality in ["CT", "MR"] then route to A }',
    'rule "a" { when DataSet.PixelSpacing == [1000, 2000] then route to A }',
])
def test_correct_forms_give_none_of_the_porting_findings(source):
    new = {"catch-all", "contains-values", "empty-string", "text-as-number"}
    assert [d.one_line() for d in findings(source) if d.code in new or d.is_error] == []


def test_a_misspelt_table_file_is_one_finding_with_the_closest_name(run_in):
    write(run_in / "sites.csv", "aet,site,limit\nCT1,A,10\n")
    write(run_in / "main.rules", 'table sites from "site.csv" key "aet"\n'
                                  'rule "a" {\n'
                                  '  when Association.CallingAET in sites\n'
                                  '    and lookup(sites.site, Association.CallingAET) == "A"\n'
                                  '  then {\n'
                                  '    set DataSet.InstitutionName = lookup(sites.site, Association.CallingAET)\n'
                                  '    set DataSet.StationName = lookup(sites, "x")\n'
                                  '    let site = lookup(sites.site, "CT1")\n'
                                  '    log sites.site + site\n'
                                  '    route to A\n'
                                  '  }\n'
                                  '}\n'
                                  'rule "z" { then route to Z }\n')
    errors = [d for d in rulesengine.check_file("main.rules") if d.is_error]
    assert [(d.code, d.span.line) for d in errors] == [("table", 1)], [d.one_line() for d in errors]
    assert errors[0].hint == 'did you mean "sites.csv"?'


def test_a_table_that_cannot_be_used_is_reported_once(run_in):
    write(run_in / "empty.csv", "")
    write(run_in / "main.rules", 'table codes from "empty.csv"\n'
                                  'rule "a" { when DataSet.Modality in codes then route to A }\n'
                                  'rule "z" { then set DataSet.StationName = lookup(codes.x, "y") }\n')
    errors = [d for d in rulesengine.check_file("main.rules") if d.is_error]
    assert [(d.code, d.span.line) for d in errors] == [("table", 1)], [d.one_line() for d in errors]


def test_a_table_file_with_no_close_name_has_no_hint(run_in):
    write(run_in / "main.rules", 'table sites from "elsewhere.csv"\nrule "a" { then route to A }\n')
    (d,) = [d for d in rulesengine.check_file("main.rules") if d.is_error]
    assert d.code == "table" and d.hint is None


def test_a_table_cell_used_as_a_number(run_in):
    write(run_in / "limits.csv", "aet,max_rows\nCT1,512\n")
    write(run_in / "main.rules", 'table limits from "limits.csv" key "aet"\n'
                                  'rule "a" {\n'
                                  '  then {\n'
                                  '    let limit = lookup(limits.max_rows, Association.CallingAET)\n'
                                  '    if DataSet.Rows > limit { log "large" }\n'
                                  '    if lookup(limits.max_rows, "CT1", "0") == 512 { log "512" }\n'
                                  '    set DataSet.Columns = limit\n'
                                  '    log limit + 1\n'
                                  '    set DataSet.InstitutionName = "site " + limit\n'
                                  '    if limit == "512" { log "as text" }\n'
                                  '    route to A\n'
                                  '  }\n'
                                  '}\n')
    found = [d for d in rulesengine.check_file("main.rules") if d.code == "text-as-number"]
    assert [(d.span.line, d.span.column) for d in found] == [(5, 23), (6, 8), (7, 27), (8, 9)], \
        [d.one_line() for d in found]
    assert all(d.severity.value == "warning" and "limits.max_rows" in d.message for d in found)
    assert found[0].hint == "convert it once where it is kept: let limit = number(lookup(...))"
    assert "number(lookup(...))" in found[1].hint
    assert '"10" plus 1 is "101"' in found[3].message
    # written to a number element, the generic warning gives way to this one
    assert not [d for d in rulesengine.check_file("main.rules") if d.code == "type-mismatch"]


def test_the_rewrites_the_hints_give_mean_what_they_say():
    """The warnings' hints are followed literally by users: each rewrite must behave as said."""
    from helpers.evaluation import evaluate

    def fires(condition: str, **values) -> bool:
        source = f'rule "r" {{\n  when {condition}\n  then route to YES\n}}\nrule "else" {{\n  then route to NO\n}}\n'
        decision = evaluate(source, None, **values)
        assert decision.error is None, decision.error
        return "YES" in decision.destinations

    save_page = {"DataSet__ImageType": ["ORIGINAL", "PRIMARY", "SAVE PAGE"]}
    assert not fires('DataSet.ImageType contains "SAVE"', **save_page)  # what the warning is about
    assert fires('any v in DataSet.ImageType: v contains "SAVE"', **save_page)
    assert not fires('"SAVE" in DataSet.ImageType', **save_page)
    assert fires('"SAVE PAGE" in DataSet.ImageType', **save_page)
    assert fires('all v in DataSet.ImageType: v not contains "AXIAL"', **save_page)
    # == "" and its rewrite, for a missing, an empty and a present element
    assert not fires('DataSet.AccessionNumber == ""')
    assert fires('empty DataSet.AccessionNumber or missing DataSet.AccessionNumber')
    assert fires('empty DataSet.AccessionNumber or missing DataSet.AccessionNumber', DataSet__AccessionNumber="")
    assert not fires('empty DataSet.AccessionNumber or missing DataSet.AccessionNumber', DataSet__AccessionNumber="A1")
    assert not fires('DataSet.AccessionNumber != ""')
    assert fires('exists DataSet.AccessionNumber and not empty DataSet.AccessionNumber', DataSet__AccessionNumber="A1")
    assert not fires('exists DataSet.AccessionNumber and not empty DataSet.AccessionNumber')
    assert fires('not empty DataSet.AccessionNumber')
    # the tag rewrites name the element the other tool meant
    assert fires('DataSet.(0028,0301) == "YES"', DataSet__BurnedInAnnotation="YES")
    assert fires('DataSet.(0018,0015) == "CHEST"', DataSet__BodyPartExamined="CHEST")
