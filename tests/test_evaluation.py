"""What compiled rules do: conditions, values, actions and the order of evaluation."""

from __future__ import annotations

import pytest

import rulesengine
from rulesengine import Arrival, Document, RulesError

from helpers.files import SAMPLES
from helpers.evaluation import evaluate


def route_if(condition: str) -> str:
    return f'rule "r" {{\n  when {condition}\n  then route to YES\n}}\nrule "else" {{\n  then route to NO\n}}\n'


def fires(condition: str, document: Document | None = None, **values) -> bool:
    decision = evaluate(route_if(condition), document, **values)
    assert decision.error is None, decision.error
    return "YES" in decision.destinations


# ---- null, missing, empty ------------------------------------------------------------

def test_missing_element_compares_false_both_ways():
    assert not fires('DataSet.Modality == "CT"')
    assert not fires('DataSet.Modality != "CT"')
    assert not fires('DataSet.Modality not in ["CT", "MR"]')
    assert fires('not (DataSet.Modality == "CT")')


def test_exists_missing_empty_are_three_cases():
    assert fires("missing DataSet.Modality")
    assert not fires("exists DataSet.Modality")
    assert not fires("empty DataSet.Modality")
    assert fires("exists DataSet.Modality", DataSet__Modality="")
    assert fires("empty DataSet.Modality", DataSet__Modality="")
    assert not fires("missing DataSet.Modality", DataSet__Modality="")
    assert not fires("empty DataSet.Modality", DataSet__Modality="CT")


def test_empty_sequence_and_present_sequence(ct_document):
    assert fires("exists DataSet.ScheduledProcedureStepSequence", ct_document)
    assert not fires("empty DataSet.ScheduledProcedureStepSequence", ct_document)
    assert fires("len(DataSet.ScheduledProcedureStepSequence) == 2", ct_document)


def test_concatenation_treats_null_as_empty_text():
    decision = evaluate('rule "r" { then {\n set DataSet.PatientComments = "x" + DataSet.Modality + "y"\n'
                        ' route to A } }')
    assert decision.destinations["A"].get("DataSet.PatientComments") == "xy"


def test_a_function_of_null_is_null_and_setting_null_empties():
    decision = evaluate('rule "r" { then {\n set DataSet.PatientComments = lower(DataSet.Modality)\n'
                        ' log coalesce(lower(DataSet.Modality), "null")\n route to A } }')
    assert decision.log[0].message == "null"  # lower(null) is null, not ""
    assert decision.destinations["A"].get("DataSet.PatientComments") == ""


def test_coalesce_replaces_null():
    decision = evaluate('rule "r" { then {\n set DataSet.PatientComments = coalesce(DataSet.Modality, "none")\n'
                        ' route to A } }')
    assert decision.destinations["A"].get("DataSet.PatientComments") == "none"


# ---- types ------------------------------------------------------------------------------

def test_numbers_compare_as_numbers(ct_document):
    assert fires("DataSet.Rows == 128", ct_document)
    assert fires("DataSet.Rows > 100", ct_document)
    assert fires("DataSet.SliceThickness >= 5", ct_document)  # DS 5.0
    assert not fires("DataSet.Rows < 100", ct_document)


def test_dates_and_times_compare_as_instants():
    assert fires('DataSet.StudyDate < "20240101"', DataSet__StudyDate="20231231")
    assert not fires('DataSet.StudyDate < "20240101"', DataSet__StudyDate="20240101")
    assert fires('DataSet.StudyTime == "093000"', DataSet__StudyTime="0930")
    assert fires('DataSet.StudyTime > "0900"', DataSet__StudyTime="091500.5")


def test_multi_valued_elements(ct_document):
    assert fires('DataSet.ImageType contains "AXIAL"', ct_document)
    assert fires('DataSet.ImageType[3] == "AXIAL"', ct_document)
    assert fires('DataSet.ImageType == ["ORIGINAL", "PRIMARY", "AXIAL"]', ct_document)
    assert not fires('DataSet.ImageType == "ORIGINAL"', ct_document)
    assert fires('DataSet.ImageType matches /^AX/', ct_document)


def test_one_value_of_a_multi_valued_element_equals_that_value():
    assert fires('DataSet.OtherPatientIDs == "X1"', DataSet__OtherPatientIDs="X1")


def test_contains_on_text_is_a_substring_test():
    assert fires('DataSet.StudyDescription contains "W/O"', DataSet__StudyDescription="CHEST W/O")
    assert fires('DataSet.StudyDescription startswith "CHE"', DataSet__StudyDescription="CHEST")
    assert fires('DataSet.StudyDescription endswith "EST"', DataSet__StudyDescription="CHEST")
    assert fires('DataSet.StudyDescription not contains "HEAD"', DataSet__StudyDescription="CHEST")


def test_regex_flags_and_negation():
    assert fires("DataSet.StudyDescription matches /chest/i", DataSet__StudyDescription="CHEST")
    assert not fires("DataSet.StudyDescription matches /chest/", DataSet__StudyDescription="CHEST")
    assert fires("DataSet.StudyDescription not matches /head/i", DataSet__StudyDescription="CHEST")


def test_numeric_text_compares_with_numbers():
    document = Document()
    document.set('DataSet.(0009,"ACME 1.1",10)', "42")  # an unknown private element: stored as LO text
    assert fires('DataSet.(0009,"ACME 1.1",10) == 42', document)
    assert fires('DataSet.(0009,"ACME 1.1",10) > 41.5', document)
    assert not fires("DataSet.PatientAge == 5", DataSet__PatientAge="005Y")


def test_and_or_not_precedence():
    values = dict(DataSet__Modality="CT", DataSet__StationName="S1")
    assert fires('DataSet.Modality == "MR" or DataSet.Modality == "CT" and DataSet.StationName == "S1"', **values)
    assert not fires('(DataSet.Modality == "MR" or DataSet.Modality == "CT") and DataSet.StationName == "S2"',
                     **values)


# ---- paths -----------------------------------------------------------------------------

def test_every_path_form_reads(ct_document):
    ct_document.command_set.MessageID = 7
    ct_document.command_set.CommandField = 1
    assert ct_document.get("DataSet.(0010,0020)") == "123456"
    assert ct_document.get('DataSet.(0009,"ACME 1.1",10)') == "INTERNAL-REF-42"
    assert ct_document.get("DataSet.ScheduledProcedureStepSequence[1].Modality") == "CT"
    assert ct_document.get("DataSet.ImageType[3]") == "AXIAL"
    assert ct_document.get("DataSet.OtherPatientIDsSequence[*].IssuerOfPatientID") == ["HOSP1", "HOSP2"]
    assert ct_document.get("DataSet.**.Modality") == ["CT", "CT", ""]
    assert ct_document.get("CommandSet.MessageID") == 7
    assert ct_document.get("CommandSet.CommandField") == 1
    assert ct_document.get("FileMeta.TransferSyntaxUID") == "1.2.840.10008.1.2.1"
    assert ct_document.get("Association.CallingAET") == "CT1"
    assert ct_document.get("Association.CalledAET") == "ROUTER"
    assert ct_document.get("Source.Name") == "main"


def test_any_and_all_over_items(ct_document):
    assert fires('any id in DataSet.OtherPatientIDsSequence: id.IssuerOfPatientID == "HOSP2"', ct_document)
    assert not fires('all id in DataSet.OtherPatientIDsSequence: id.IssuerOfPatientID == "HOSP2"', ct_document)
    assert fires('any issuer in DataSet.OtherPatientIDsSequence[*].IssuerOfPatientID: issuer == "HOSP1"',
                 ct_document)
    assert fires('all step in DataSet.ScheduledProcedureStepSequence: exists step.Modality', ct_document)


def test_all_over_no_items_is_true_and_any_is_false():
    assert fires('all s in DataSet.ScheduledProcedureStepSequence: s.Modality == "CT"')
    assert not fires('any s in DataSet.ScheduledProcedureStepSequence: s.Modality == "CT"')


def test_command_set_and_arrival_in_conditions():
    document = Document(arrival=Arrival(calling_aet="MR1", peer_address="10.0.0.5", source_name="main"))
    document.command_set.CommandField = 1
    assert fires('CommandSet.CommandField == 1 and Association.CallingAET == "MR1"', document)
    assert fires('Association.PeerAddress startswith "10." and Source.Name == "main"', document)


# ---- actions ------------------------------------------------------------------------------

def test_set_creates_elements_and_items_with_the_dictionary_vr():
    decision = evaluate('rule "r" { then {\n'
                        ' set DataSet.ScheduledProcedureStepSequence[2].Modality = "MR"\n'
                        ' set DataSet.SeriesNumber = 3\n'
                        ' set DataSet.ImageType[2] = "SECONDARY"\n'
                        ' route to A } }')
    ds = decision.destinations["A"].dataset
    assert len(ds.ScheduledProcedureStepSequence) == 2
    assert ds.ScheduledProcedureStepSequence[1].Modality == "MR"
    assert ds["SeriesNumber"].VR == "IS" and ds.SeriesNumber == 3
    assert list(ds.ImageType) == ["", "SECONDARY"]
    assert [e.path for e in decision.edits][0] == "DataSet.ScheduledProcedureStepSequence[2].Modality"


def test_edits_record_path_old_new_and_rule(ct_document):
    decision = evaluate('rule "fix" {\n  when exists DataSet.PatientID\n  then set DataSet.PatientID = "X-" + '
                        'DataSet.PatientID\n}\nrule "r" { then route to A }', ct_document)
    (edit,) = decision.edits
    assert (edit.path, edit.old, edit.new, edit.rule, edit.line) == ("DataSet.PatientID", "123456", "X-123456",
                                                                      "fix", 3)


def test_for_each_walks_items_in_order(ct_document):
    decision = evaluate('rule "fill" {\n  then for each step in DataSet.ScheduledProcedureStepSequence {\n'
                        '    if step.Modality == "" { set step.Modality = DataSet.Modality }\n'
                        '    log step.ScheduledProcedureStepDescription\n  }\n}\n'
                        'rule "r" { then route to A }', ct_document)
    assert [line.message for line in decision.log] == ["CHEST CT", "CHEST CT FOLLOW-UP"]
    assert ct_document.get("DataSet.ScheduledProcedureStepSequence[*].Modality") == ["CT", "CT"]
    assert decision.edits[0].path == "DataSet.ScheduledProcedureStepSequence[2].Modality"


def test_for_each_over_elements_at_any_depth_rewrites_each(ct_document):
    before = ct_document.get("DataSet.StudyInstanceUID")
    ct_document.set("DataSet.RequestAttributesSequence[1].StudyInstanceUID", before)  # a second, nested one
    decision = evaluate('rule "u" { then {\n  for each e in DataSet.**.StudyInstanceUID { set e = uid(e) }\n'
                        '  route to A\n} }', ct_document)
    after = ct_document.get("DataSet.**.StudyInstanceUID")
    assert len(after) == 2 and all(value != before and value.startswith("2.25.") for value in after)
    assert [edit.old for edit in decision.edits] == [before, before]


def test_blank_only_touches_present_elements():
    decision = evaluate('rule "b" { then {\n blank DataSet.AccessionNumber\n blank DataSet.PatientID\n'
                        ' route to A } }', DataSet__PatientID="P1")
    doc = decision.destinations["A"]
    assert doc.get("DataSet.PatientID") == "" and doc.get("DataSet.AccessionNumber") is None


def test_delete_private_and_by_creator(ct_document):
    decision = evaluate('rule "p" { then {\n delete DataSet.(0009,"ACME 1.1",10)\n route to A } }', ct_document)
    assert ct_document.get('DataSet.(0009,"ACME 1.1",10)') is None
    assert ct_document.get('DataSet.(0009,"GEMS_IDEN_01",01)') == "GE_GENESIS_FF"
    decision = evaluate('rule "p" { then {\n delete private\n route to A } }', ct_document)
    assert not [e for e in ct_document.dataset if e.tag.group % 2]
    assert decision.edits[0].path == "DataSet private elements"


def test_route_copy_and_per_destination_edits(ct_document):
    decision = evaluate(
        'rule "a" { then copy to RESEARCH {\n  set DataSet.PatientName = "ANON"\n} }\n'
        'rule "b" { then set DataSet.InstitutionName = "MAIN EDIT" }\n'
        'rule "c" { then route to PACS, ARCHIVE }', ct_document)
    assert list(decision.destinations) == ["RESEARCH", "PACS", "ARCHIVE"]
    research = decision.destinations["RESEARCH"]
    assert research.get("DataSet.PatientName") == "ANON"
    # a copy starts from the document as edited when evaluation ends
    assert research.get("DataSet.InstitutionName") == "MAIN EDIT"
    assert decision.destinations["PACS"].get("DataSet.PatientName") == "DOE^JOHN"
    assert [e.destination for e in decision.edits] == [None, "RESEARCH"]


def test_let_keeps_a_value_for_a_copy(ct_document):
    decision = evaluate(
        'rule "a" {\n  then {\n    let id = DataSet.PatientID\n    set DataSet.PatientID = "MAIN"\n'
        '    copy to R {\n      set DataSet.PatientID = "R-" + id\n    }\n  }\n}', ct_document)
    assert decision.destinations["R"].get("DataSet.PatientID") == "R-123456"
    assert ct_document.get("DataSet.PatientID") == "MAIN"


@pytest.mark.parametrize("action,outcome", [("drop", "drop"), ('reject "no"', "reject"),
                                            ('quarantine "why"', "quarantine")])
def test_ending_actions_stop_evaluation_and_send_nowhere(action, outcome):
    decision = evaluate(f'rule "a" {{ then route to A }}\nrule "b" {{ then {action} }}\n'
                        'rule "c" { then route to C }')
    assert decision.outcome == outcome
    assert decision.destinations == {}
    assert [r.name for r in decision.rules_fired] == ["a", "b"]


def test_stop_keeps_what_was_decided():
    decision = evaluate('rule "a" { then route to A }\nrule "b" { then stop }\nrule "c" { then route to C }')
    assert decision.outcome == "route" and list(decision.destinations) == ["A"]


@pytest.mark.parametrize("policy", ["quarantine", "drop", "reject"])
def test_no_destination_policy(policy):
    ruleset = rulesengine.compile_source('rule "a" { when DataSet.Modality == "CT" then route to A }',
                                         no_destination=policy)
    decision = ruleset.evaluate(Document())
    assert decision.outcome == policy and "no rule routed" in decision.reason


def test_reject_reason_is_an_expression():
    decision = evaluate('rule "a" { then reject "modality not accepted: " + DataSet.Modality }',
                        DataSet__Modality="OT")
    assert decision.reason == "modality not accepted: OT"


def test_every_matching_rule_acts_in_file_order():
    decision = evaluate('rule "1" { then log "one" }\nrule "2" { when DataSet.Modality == "CT" then log "two" }\n'
                        'rule "3" { then { log "three" \n route to A } }', DataSet__Modality="CT")
    assert [line.message for line in decision.log] == ["one", "two", "three"]


def test_conditions_see_earlier_edits():
    decision = evaluate('rule "1" { then set DataSet.Modality = "MR" }\n'
                        'rule "2" { when DataSet.Modality == "MR" then route to MR_PACS }', DataSet__Modality="CT")
    assert list(decision.destinations) == ["MR_PACS"]


def test_not_routed_back_to_the_sender_unless_said():
    destinations = {"PACS": {"ae_title": "PACS_AE"}, "ARCHIVE": {"ae_title": "ARCH"}}
    document = Document(arrival=Arrival(calling_aet="PACS_AE"))
    decision = evaluate('rule "a" { then route to PACS, ARCHIVE }', document, destinations)
    assert list(decision.destinations) == ["ARCHIVE"] and "PACS" in decision.skipped
    document = Document(arrival=Arrival(calling_aet="PACS_AE"))
    decision = evaluate('rule "a" { then route back to PACS }', document, destinations)
    assert list(decision.destinations) == ["PACS"]


# ---- functions ---------------------------------------------------------------------------

@pytest.mark.parametrize("expression,expected", [
    ('lower("AbC")', "abc"), ('upper("abc")', "ABC"), ('trim("  a ")', "a"),
    ('replace("a-b-c", /-/, "+")', "a+b+c"), ('substr("HOSPITAL", 2, 3)', "OSP"), ('substr("HOSPITAL", 5)', "ITAL"),
    ('len("abcd") + 0', 4), ('coalesce(DataSet.Modality, "x")', "x"), ('join(split("a,b", ","), "\\\\")', "a\\b"),
    ('shift_date("20240301", -1)', "20240229"), ('shift_date("20240228120000", 1)', "20240229120000"),
    ('"n" + 5', "n5"), ("2 + 3", 5),
    ('hash("x") + ""', "4EEE02E13E2FF87A"),  # with the built-in development key: stable across releases
])
def test_functions(expression, expected):
    decision = evaluate(f'rule "a" {{ then log {expression} }}')
    assert decision.log[0].message == (expected if isinstance(expected, str) else str(expected))


def test_uid_is_deterministic_valid_and_keyed():
    first = rulesengine.compile_source('rule "a" { then log uid("1.2.3") }').evaluate(Document()).log[0].message
    again = rulesengine.compile_source('rule "a" { then log uid("1.2.3") }').evaluate(Document()).log[0].message
    other = rulesengine.compile_source('rule "a" { then log uid("1.2.3") }',
                                       secrets=rulesengine.Secrets(b"k", "1.2.826.0.1.3680043.10.999"))
    keyed = other.evaluate(Document()).log[0].message
    assert first == again == "2.25.323455195228885411405867424083994495249"
    assert keyed.startswith("1.2.826.0.1.3680043.10.999.") and len(keyed) <= 64
    log_uid = 'rule "a" { then log uid(DataSet.StudyInstanceUID) }'
    document = Document()
    document.set("DataSet.StudyInstanceUID", "1.2.4")
    assert rulesengine.compile_source(log_uid).evaluate(document).log[0].message != first  # depends on the input
    same_root_other_key = rulesengine.compile_source('rule "a" { then log uid("1.2.3") }',
                                                     secrets=rulesengine.Secrets(b"k"))
    assert same_root_other_key.evaluate(Document()).log[0].message not in (first, "")  # and on the key


def test_lookup_from_a_table(tmp_path):
    (tmp_path / "sites.csv").write_text("aet,institution\nCT1,General\n", encoding="utf-8")
    source = ('table sites from "sites.csv" key "aet"\n'
              'rule "a" {\n  when Association.CallingAET in sites\n'
              '  then log lookup(sites.institution, Association.CallingAET) + "/" + lookup(sites, "none", "?")\n}\n')
    ruleset = rulesengine.compile_source(source, filename=str(tmp_path / "main.rules"))
    decision = ruleset.evaluate(Document(arrival=Arrival(calling_aet="CT1")))
    assert decision.log[0].message == "General/?"
    assert ruleset.evaluate(Document(arrival=Arrival(calling_aet="XX"))).log == []


# ---- failures at run time ------------------------------------------------------------------

def test_a_value_invalid_for_its_vr_quarantines_with_file_and_line():
    ruleset = rulesengine.compile_source('rule "a" {\n  then {\n    route to A\n'
                                         '    set DataSet.StudyDate = DataSet.PatientID\n  }\n}',
                                         filename="dates.rules")
    document = Document()
    document.set("DataSet.PatientID", "not-a-date")
    decision = ruleset.evaluate(document)
    assert decision.outcome == "quarantine" and decision.destinations == {}
    assert decision.error.startswith("dates.rules:4: rule 'a': DataSet.StudyDate:")
    assert "not a valid DA" in decision.error


def test_the_compiled_rule_set_reports_the_tags_it_reads():
    ruleset = rulesengine.compile_source(
        'rule "a" { when DataSet.Modality == "CT" and any s in DataSet.OtherPatientIDsSequence: '
        's.IssuerOfPatientID == "X" then set DataSet.PatientName = DataSet.PatientID }')
    assert ruleset.tags_read == frozenset({0x00080060, 0x00101002, 0x00100020})
    anywhere = rulesengine.compile_source('rule "a" { when any n in DataSet.**.PatientName: n == "x" then drop }')
    assert anywhere.tags_read is None  # ** can be anywhere: the whole data set is needed


def test_rules_error_carries_findings():
    with pytest.raises(RulesError) as caught:
        rulesengine.compile_source('rule "a" { when DataSet.PatientsName == "x" then drop }', filename="a.rules")
    (finding,) = [d for d in caught.value.diagnostics if d.is_error]
    assert finding.code == "unknown-keyword" and finding.span.line == 1 and finding.span.column == 25
    assert "PatientName" in finding.hint


def test_sample_with_non_ascii_text_round_trips(tmp_path):
    document = Document.read(SAMPLES / "mr_knee.dcm")
    decision = evaluate('rule "a" { then {\n set DataSet.StudyDescription = "Knöchel links"\n route to A } }',
                        document)
    target = tmp_path / "out.dcm"
    decision.destinations["A"].write(target)
    again = Document.read(target)
    assert again.get("DataSet.StudyDescription") == "Knöchel links"
    assert again.get("DataSet.PatientName") == "Müller^Jürgen"


def test_remembered_values_follow_edits():
    decision = evaluate(
        'rule "1" { when lower(DataSet.StudyDescription) contains "chest" then log "before: chest" }\n'
        'rule "2" { then set DataSet.StudyDescription = "HEAD" }\n'
        'rule "3" { when lower(DataSet.StudyDescription) contains "head" then log "after: head" }\n'
        'rule "4" { when DataSet.StudyDescription in ["HEAD"] then route to A }',
        DataSet__StudyDescription="CHEST")
    assert [line.message for line in decision.log] == ["before: chest", "after: head"]
    assert list(decision.destinations) == ["A"]
