"""Group rules evaluated over real instances (pydicom's bundled files, and studies of several
series made from them): keys, group order, completion, aggregates, decisions; `dicom-rules
dry-run` on a folder taken as a study, and rule tests of several instances."""

from __future__ import annotations

import json

import pydicom
import pytest
from helpers.cli import dicom_rules
from helpers.files import bundled, write
from helpers.instances import make_study

from rulesengine.document import Document
from rulesengine.lang.api import compile_source
from rulesengine.lang.groups import NOT_ROUTED

MR_SMALL = bundled("MR_small.dcm")

STUDY_RULE = '''rule "AI" per study {
  complete after 10m
  complete when any(DataSet.SeriesDescription matches /Axial T2/)
    and any(DataSet.SeriesDescription matches /Sag T1/)
  late quarantine
  when count() >= 3
  then {
    set DataSet.InstitutionName = "n=" + count() + " t2=" + count(DataSet.SeriesDescription == "Axial T2")
    log "series: " + distinct(DataSet.SeriesDescription)
    route to AI
  }
}
'''


def documents(instances) -> list[Document]:
    return [Document(pydicom.dcmread(instance.path)) for instance in instances]


def described(docs) -> list[tuple[str, int]]:
    return [(str(d.dataset.SeriesDescription), int(d.dataset.InstanceNumber)) for d in docs]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study of three series, made from MR_small.dcm, arriving as listed: Sag T1 (series 3),
    Axial T2 (series 1) and a localizer without SeriesNumber."""
    folder = tmp_path_factory.mktemp("study")
    return make_study(folder, [("Sag T1", 2, 3), ("Axial T2", 3, 1), ("Localizer", 1, None)], source=MR_SMALL)


def test_the_interface_of_a_compiled_group_rule():
    ruleset = compile_source(STUDY_RULE + 'rule "all" {\n  then route to PACS\n}\n')
    (rule,) = ruleset.group_rules
    assert (rule.name, rule.level, rule.quiet_seconds, rule.late, rule.has_completion) == (
        "AI", "study", 600.0, "quarantine", True)
    defaults = compile_source('rule "s" per series {\n  then route to AI\n}\n').group_rules[0]
    assert (defaults.level, defaults.quiet_seconds, defaults.late, defaults.has_completion) == (
        "series", None, "refire", False)
    assert compile_source('rule "all" {\n  then route to PACS\n}\n').group_rules == ()


def test_keys_per_study_and_per_series(study):
    docs = documents(study)
    per_study = compile_source(STUDY_RULE).group_rules[0]
    per_series = compile_source('rule "s" per series {\n  then route to AI\n}\n').group_rules[0]
    assert len({per_study.key(d) for d in docs}) == 1
    assert per_study.key(docs[0]) == (str(docs[0].dataset.StudyInstanceUID), None)
    assert len({per_series.key(d) for d in docs}) == 3
    assert per_series.key(docs[0]) == (str(docs[0].dataset.StudyInstanceUID), str(docs[0].dataset.SeriesInstanceUID))
    del docs[0].dataset.SeriesInstanceUID
    docs[0].cache.clear()  # values read by path are kept until an edit through the document
    assert per_series.key(docs[0]) is None and per_study.key(docs[0]) is not None
    del docs[0].dataset.StudyInstanceUID
    docs[0].cache.clear()
    assert per_study.key(docs[0]) is None


def test_group_order_series_by_number_absent_last_instances_by_number(study):
    docs = documents(study)
    arrival = docs[::-1]  # the localizer first, the Sag T1 instances last, each series backwards
    rule = compile_source(STUDY_RULE).group_rules[0]
    assert described(rule.order(arrival)) == [("Axial T2", 1), ("Axial T2", 2), ("Axial T2", 3), ("Sag T1", 1),
                                              ("Sag T1", 2), ("Localizer", 1)]
    # Without numbers: arrival order, series by their first arrival.
    for doc in docs:
        del doc.dataset.InstanceNumber
        if "SeriesNumber" in doc.dataset:
            del doc.dataset.SeriesNumber
        doc.cache.clear()
    assert [d.dataset.SOPInstanceUID for d in rule.order(arrival)] == [d.dataset.SOPInstanceUID for d in arrival]


def test_complete_when_holds_once_both_series_are_in(study):
    docs = documents(study)
    rule = compile_source(STUDY_RULE).group_rules[0]
    sag, axial = docs[:2], docs[2:5]
    assert not rule.is_complete(sag)
    assert not rule.is_complete(axial)
    assert rule.is_complete(sag + axial[:1])
    assert not rule.is_complete([])
    without = compile_source('rule "s" per study {\n  then route to AI\n}\n').group_rules[0]
    assert not without.is_complete(docs)


def test_evaluate_gives_one_decision_per_instance_in_group_order_with_aggregates(study):
    docs = documents(study)
    rule = compile_source(STUDY_RULE).group_rules[0]
    decisions = rule.evaluate(docs)
    assert len(decisions) == 6
    assert {d.outcome for d in decisions} == {"route"}
    assert [list(d.destinations) for d in decisions] == [["AI"]] * 6
    sent = [d.destinations["AI"] for d in decisions]
    assert described(sent) == [("Axial T2", 1), ("Axial T2", 2), ("Axial T2", 3), ("Sag T1", 1), ("Sag T1", 2),
                               ("Localizer", 1)]
    assert {str(copy.dataset.InstitutionName) for copy in sent} == {"n=6 t2=3"}
    assert decisions[0].log[0].message == "series: Axial T2\\Sag T1\\Localizer"
    assert [r.name for r in decisions[0].rules_fired] == ["AI"]
    # The actions edit copies: the instances as given are untouched.
    assert {str(doc.dataset.InstitutionName) for doc in docs} == {str(pydicom.dcmread(MR_SMALL).InstitutionName)}


def test_when_false_gives_decisions_with_no_route(study):
    docs = documents(study)[:2]  # two instances: count() >= 3 is false
    decisions = compile_source(STUDY_RULE).group_rules[0].evaluate(docs)
    assert [(d.outcome, d.destinations, d.rules_fired, d.unrouted) for d in decisions] == [
        (NOT_ROUTED, {}, [], True)] * 2
    assert decisions[0].reason == "group rule 'AI' did not route this instance"


def test_an_empty_group_has_no_decisions():
    rule = compile_source(STUDY_RULE).group_rules[0]
    assert rule.evaluate([]) == [] and rule.order([]) == []


def test_all_any_and_bare_paths_read_the_right_instances(study):
    text = '''rule "g" per study {
  when all(DataSet.Modality == "MR") and not any(DataSet.SeriesDescription == "CT")
    and DataSet.SeriesDescription == "Axial T2"
  then {
    if DataSet.SeriesDescription == "Localizer" {
      quarantine "no localizers for the AI tool"
    } else {
      route to AI
    }
  }
}
'''
    decisions = compile_source(text).group_rules[0].evaluate(documents(study))
    # `when`: the bare path reads the first instance in group order (Axial T2); the actions, each instance.
    assert [d.outcome for d in decisions] == ["route"] * 5 + ["quarantine"]
    assert decisions[-1].reason == "no localizers for the AI tool"


def test_drop_late_policy_and_a_failing_rule_quarantine_each_instance(study):
    text = 'rule "g" per series {\n  late drop\n  when number(DataSet.SeriesDescription) > 1\n  then route to AI\n}\n'
    rule = compile_source(text).group_rules[0]
    assert rule.late == "drop"
    decisions = rule.evaluate(documents(study)[:2])
    assert [d.outcome for d in decisions] == ["quarantine", "quarantine"]
    assert all(d.error and "main.rules:3" in d.error or "<rules>:3" in d.error for d in decisions)


def test_traced_evaluation_records_the_conditions(study):
    rule = compile_source(STUDY_RULE).group_rules[0]
    decision = rule.evaluate(documents(study), trace=True)[0]
    assert decision.trace and any(event.result for event in decision.trace)


# ---- dry-run --------------------------------------------------------------------------------


DRY_RULES = STUDY_RULE + '''
rule "archive" {
  when DataSet.SeriesDescription != "Localizer"
  then route to PACS
}
'''


def test_dry_run_on_a_folder_takes_it_as_a_study(run_in, study):
    write(run_in / "main.rules", DRY_RULES)
    folder = study[0].path.parent
    result = dicom_rules("dry-run", "main.rules", folder, "--out", "out")
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    group = text[text.index("group rule 'AI'"):]
    study_uid = pydicom.dcmread(study[0].path).StudyInstanceUID
    assert group.splitlines()[:4] == [
        f"group rule 'AI' (line 1) per study: study {study_uid}",
        "  instances: 6",
        "  completion: complete when holds after instance 3 of 6",
        "  when: true; late instances: quarantine"]
    # The instances in group order, each as the instance-level dry-run shows one.
    listed = [line.strip() for line in group.splitlines() if line.startswith("  /") or line.startswith("  " + str(folder))]
    assert [p.rsplit("/", 1)[1] for p in listed] == ["02_001.dcm", "02_002.dcm", "02_003.dcm", "01_001.dcm",
                                                     "01_002.dcm", "03_001.dcm"]
    assert group.count("    outcome: route to AI") == 6
    assert 'DataSet.InstitutionName: "' in group and '-> "n=6 t2=3"' in group
    # No instance rule routed the localizer (the no_destination policy's quarantine): not a rule's
    # decision, so it joins the group all the same.
    localizer = text[text.index("03_001.dcm"):].splitlines()[1]
    assert localizer.startswith("  outcome: quarantine")
    written = sorted(p.name for p in (run_in / "out" / "AI").rglob("*.dcm"))
    assert len(written) == 6
    assert {str(pydicom.dcmread(p).InstitutionName) for p in (run_in / "out" / "AI").rglob("*.dcm")} == {"n=6 t2=3"}


def test_dry_run_json_reports_each_group(run_in, study):
    write(run_in / "main.rules", DRY_RULES.replace('  when count() >= 3\n', '  when count() >= 30\n'))
    result = dicom_rules("dry-run", "main.rules", study[0].path.parent, "--format", "json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    groups = [line for line in lines if "group" in line]
    assert len(groups) == 1 and len(lines) == 7
    (group,) = groups
    assert {k: group["group"][k] for k in ("rule", "level", "instances", "completed_by", "quiet_seconds", "late")} == {
        "rule": "AI", "level": "study", "instances": 6, "completed_by": 3, "quiet_seconds": 600.0,
        "late": "quarantine"}
    assert [d["outcome"] for d in group["decisions"]] == [NOT_ROUTED] * 6


# ---- rule tests of several instances ------------------------------------------------------


def test_rule_tests_of_several_instances(run_in):
    write(run_in / "ai.rules", STUDY_RULE)
    source = bundled("MR_small.dcm")
    (run_in / "mr.dcm").write_bytes(open(source, "rb").read())
    write(run_in / "ai_test.rules", '''test "three instances of two series: sent" {
  given file "mr.dcm"
  with DataSet.SeriesInstanceUID = "1.2.3.1", DataSet.SeriesDescription = "Axial T2", DataSet.SeriesNumber = 1
  given file "mr.dcm"
  with DataSet.SeriesInstanceUID = "1.2.3.1", DataSet.SeriesDescription = "Axial T2", DataSet.SeriesNumber = 1
  given file "mr.dcm"
  with DataSet.SeriesInstanceUID = "1.2.3.2", DataSet.SeriesDescription = "Sag T1", DataSet.SeriesNumber = 2
  expect route to AI
  expect copy to AI where DataSet.InstitutionName == "n=3 t2=2"
  expect fired "AI"
}

test "two instances: not sent, and each failure names its file" {
  given file "mr.dcm"
  with DataSet.SeriesDescription = "Axial T2"
  given file "elsewhere/../mr.dcm"
  with DataSet.SeriesDescription = "Sag T1"
  expect route to AI
  expect for "mr.dcm" DataSet.SeriesDescription == "Sag T1"
  expect for "elsewhere/../mr.dcm" DataSet.SeriesDescription == "Sag T1"
}
''')
    (run_in / "elsewhere").mkdir()
    result = dicom_rules("test", "ai_test.rules")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "FAIL  ai_test.rules:13: two instances: not sent, and each failure names its file",
        "      ai_test.rules:18:3: mr.dcm: expected a route to AI; destinations: none; outcome: quarantine "
        "(no rule routed this document)",
        "      ai_test.rules:18:3: elsewhere/../mr.dcm: expected a route to AI; destinations: none; outcome: "
        "quarantine (no rule routed this document)",
        "      ai_test.rules:19:3: mr.dcm: expected DataSet.SeriesDescription == \"Sag T1\", but "
        "DataSet.SeriesDescription is \"Axial T2\"",
        "2 tests, 1 passed, 1 failed"]


def test_expect_for_must_name_a_given_file(run_in):
    write(run_in / "ai.rules", STUDY_RULE)
    (run_in / "mr.dcm").write_bytes(open(bundled("MR_small.dcm"), "rb").read())
    write(run_in / "ai_test.rules", 'test "t" {\n  given file "mr.dcm"\n  given file "mr.dcm"\n'
                                    '  expect for "other.dcm" route to AI\n  expect for "mr.dcm" route to AI\n}\n')
    result = dicom_rules("lint", "ai_test.rules")
    assert result.returncode == 1
    assert "ai_test.rules:4:3: error test-file no `given file \"other.dcm\"` in this test" in result.stdout
    assert "ai_test.rules:5:3: error test-file 'mr.dcm' is given twice: expect for cannot tell which instance" \
        in result.stdout


def test_diff_compares_what_the_group_rules_decide_for_each_input(run_in, study):
    write(run_in / "old.rules", DRY_RULES.replace('  when count() >= 3\n', '  when count() >= 30\n'))
    write(run_in / "new.rules", DRY_RULES)
    result = dicom_rules("diff", "old.rules", "new.rules", study[0].path.parent)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "6 of 6 documents change"
    changes = result.stdout.splitlines()
    assert changes[0].endswith("01_001.dcm")
    assert changes[1] == "  group rules: none -> route to AI, 1 edit(s) (rule 'AI')"
    same = dicom_rules("diff", "new.rules", "new.rules", study[0].path.parent)
    assert (same.returncode, same.stdout, same.stderr.strip()) == (0, "", "0 of 6 documents change")


def test_a_late_instance_refired_alone_with_the_whole_group_counted(study):
    docs = documents(study)
    rule = compile_source(STUDY_RULE).group_rules[0]
    late = docs[3]  # an Axial T2 instance that came after the group fired
    decision = rule.evaluate_late(docs, late)
    assert list(decision.destinations) == ["AI"]
    assert decision.destinations["AI"].dataset.SOPInstanceUID == late.dataset.SOPInstanceUID
    assert str(decision.destinations["AI"].dataset.InstitutionName) == "n=6 t2=3"


class CountingDocument(Document):
    """A document that counts what is read of it by path."""

    __slots__ = ("reads",)

    def read_path(self, path, base=None):
        self.reads = getattr(self, "reads", 0) + 1
        return super().read_path(path, base)


def test_group_order_reads_each_instance_once_and_an_edit_reorders_it(study):
    (rule,) = compile_source(STUDY_RULE).group_rules
    docs = [CountingDocument(pydicom.dcmread(instance.path)) for instance in study]
    first = rule.order(docs)
    reads = [doc.reads for doc in docs]
    for _ in range(3):  # as the runtime orders a group at each arrival
        assert rule.order(docs) == first
    assert [doc.reads for doc in docs] == reads  # read once, then kept in each document's cache
    assert described(first)[:3] == [("Axial T2", 1), ("Axial T2", 2), ("Axial T2", 3)]
    axial_first = first[0]
    axial_first.set("DataSet.InstanceNumber", "9")  # an edit empties its cache: ordered by its new number
    assert described(rule.order(docs))[:3] == [("Axial T2", 2), ("Axial T2", 3), ("Axial T2", 9)]
