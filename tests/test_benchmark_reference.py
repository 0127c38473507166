"""The benchmark's reference interpreter and the compiled rule set decide alike.

The benchmark compares their speed; that comparison only means something when
both reach the same decision: outcome, destinations, rules fired, edits (paths
and values) and log. Only pydicom's bundled test files are used.
"""

from __future__ import annotations

import pytest

from benchmarks.interpreter import ReferenceInterpreter, summarise
from benchmarks.workload import (DESTINATIONS, FIRING_INSTITUTION, SAMPLE_CALLING_AET, firing_count, generate_rules,
                                 sample_document)
from rulesengine import compile_source

# (bundled file, calling AE title): the benchmark's sample, a sample from a sender no rule
# names, an MR whose sender sets off the research copies, and a plan full of sequences.
DOCUMENTS = [
    ("CT_small.dcm", SAMPLE_CALLING_AET),
    ("CT_small.dcm", "UNKNOWN_AE"),
    ("MR_small.dcm", "MR_WEST_2"),
    ("rtplan.dcm", "PLANNING_1"),
]


def decide_both(text: str, file_name: str, calling_aet: str, destinations=DESTINATIONS):
    """Summaries of the compiled and the interpreted decision, each on its own fresh document."""
    ruleset = compile_source(text, destinations, filename="reference.rules")
    interpreter = ReferenceInterpreter.from_source(text, filename="reference.rules", destinations=destinations)
    compiled = summarise(ruleset.evaluate(sample_document(file_name, calling_aet)))
    interpreted = summarise(interpreter.evaluate(sample_document(file_name, calling_aet)))
    return compiled, interpreted


@pytest.mark.parametrize("count", [1, 10, 100, 300])
@pytest.mark.parametrize("file_name, calling_aet", DOCUMENTS)
def test_generated_workloads_agree(count, file_name, calling_aet):
    compiled, interpreted = decide_both(generate_rules(count), file_name, calling_aet)
    assert interpreted == compiled


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_seeds_agree(seed):
    text = generate_rules(200, seed=seed)
    for file_name, calling_aet in DOCUMENTS:
        compiled, interpreted = decide_both(text, file_name, calling_aet)
        assert interpreted == compiled, (seed, file_name, calling_aet)


def test_workload_is_deterministic():
    assert generate_rules(50) == generate_rules(50)
    assert generate_rules(50, seed=7) != generate_rules(50)


@pytest.mark.parametrize("count", [1, 10, 100, 1000])
def test_workload_fires_a_few_rules_on_the_sample(count):
    compiled, _ = decide_both(generate_rules(count), "CT_small.dcm", SAMPLE_CALLING_AET)
    assert compiled["outcome"] == "route"
    assert len(compiled["rules_fired"]) == firing_count(count)
    assert firing_count(count) <= max(1, count // 10)


def test_workload_edits_are_idempotent_on_the_sample():
    """The benchmark evaluates one document repeatedly: after the first time nothing may change."""
    ruleset = compile_source(generate_rules(100), DESTINATIONS, filename="reference.rules")
    document = sample_document()
    first = ruleset.evaluate(document)
    assert [(e.path, e.new) for e in first.edits] == [("DataSet.InstitutionName", FIRING_INSTITUTION)]
    again = ruleset.evaluate(document)
    assert again.edits == []
    assert list(again.destinations) == list(first.destinations)


HAND_WRITTEN_CONTROL_FLOW = r'''
rule "tidy CT" {
  when DataSet.Modality == "CT" and DataSet.SliceThickness > 2
  then
    set DataSet.StudyDescription = upper(DataSet.Manufacturer) + " / " + substr(DataSet.StationName, 1, 4)
    blank DataSet.ReferringPhysicianName
    delete DataSet.AccessionNumber
    log "slice thickness " + DataSet.SliceThickness
    log DataSet.ImageType
    route to PACS_MAIN
}

rule "axial images" {
  when any kind in DataSet.ImageType: kind == "AXIAL"
  then
    if DataSet.StudyDate >= "20040101" and DataSet.StudyDate < "20050101" {
      set DataSet.InstitutionName = "Archive 2004"
    } else if DataSet.StudyDate < "20040101" {
      set DataSet.InstitutionName = "Archive old"
    } else {
      log "recent study"
    }
    copy to RESEARCH {
      set DataSet.PatientName = "RESEARCH^" + coalesce(DataSet.PatientID, "UNKNOWN")
      delete DataSet.PatientBirthDate
    }
}

rule "texts" {
  when DataSet.Manufacturer startswith "GE" and not (DataSet.Manufacturer endswith "X")
       and DataSet.Modality not in ["MR", "US"] and not (lower(DataSet.InstitutionName) contains "jfk")
       and all kind in DataSet.ImageType: kind != "DERIVED"
  then
    let site = lower(DataSet.InstitutionName)
    log "site " + site
    copy to VNA { set DataSet.InstitutionalDepartmentName = site }
}

rule "from the east wing" {
  when Association.CallingAET matches /^CT_EAST_[0-9]+$/ or empty DataSet.AccessionNumber
  then route back to TELERAD
}

rule "stop the MR" {
  when DataSet.Modality == "MR"
  then
    route to PACS_BACKUP
    stop
}

rule "after stop" {
  then route to QA_HOLD
}
'''

HAND_WRITTEN_ENDINGS = r'''
rule "reject unknown senders" {
  when Association.CallingAET matches /^unknown/i and DataSet.PatientID != "TEST"
  then reject "unknown sender " + Association.CallingAET
}

rule "drop plans" {
  when DataSet.Modality == "RTPLAN"
  then
    log "dropping plan " + coalesce(DataSet.RTPlanLabel, "?")
    drop
}

rule "quarantine missing station" {
  when missing DataSet.StationName or DataSet.StationName == ""
  then quarantine "no station name"
}

rule "bad date" {
  when DataSet.Modality == "MR"
  then set DataSet.StudyDate = DataSet.PatientID
}

rule "everything else" {
  then route to PACS_MAIN
}
'''

HAND_WRITTEN_SEQUENCES = r'''
rule "static photon beams" {
  when any beam in DataSet.BeamSequence: (beam.BeamType == "STATIC" and beam.RadiationType == "PHOTON")
  then
    for each beam in DataSet.BeamSequence {
      set beam.BeamDescription = "checked " + beam.BeamName
      if beam.TreatmentMachineName == "unit001" {
        log "machine " + beam.TreatmentMachineName
      }
    }
    route to PACS_MAIN
}

rule "every beam named" {
  when all beam in DataSet.BeamSequence: exists beam.BeamName
  then
    for each label in DataSet.RTPlanLabel {
      set label = "PLAN"
    }
    route to VNA
}

rule "no beams" {
  when missing DataSet.BeamSequence
  then route to QA_HOLD
}
'''


@pytest.mark.parametrize("text", [HAND_WRITTEN_CONTROL_FLOW, HAND_WRITTEN_ENDINGS, HAND_WRITTEN_SEQUENCES],
                         ids=["control-flow", "endings", "sequences"])
@pytest.mark.parametrize("file_name, calling_aet", DOCUMENTS)
def test_hand_written_rules_agree(text, file_name, calling_aet):
    compiled, interpreted = decide_both(text, file_name, calling_aet)
    assert interpreted == compiled


def test_hand_written_rules_exercise_what_they_claim():
    """Guards the tests above against agreeing only because nothing happened."""
    control, _ = decide_both(HAND_WRITTEN_CONTROL_FLOW, "CT_small.dcm", SAMPLE_CALLING_AET)
    assert control["rules_fired"] == ["tidy CT", "axial images", "texts", "from the east wing", "after stop"]
    assert {edit[4] for edit in control["edits"]} == {None, "RESEARCH", "VNA"}
    assert control["destinations"] == ["PACS_MAIN", "RESEARCH", "VNA", "TELERAD", "QA_HOLD"]

    stopped, _ = decide_both(HAND_WRITTEN_CONTROL_FLOW, "MR_small.dcm", "MR_WEST_2")
    assert stopped["rules_fired"][-1] == "stop the MR"

    rejected, _ = decide_both(HAND_WRITTEN_ENDINGS, "CT_small.dcm", "UNKNOWN_AE")
    assert (rejected["outcome"], rejected["reason"]) == ("reject", "unknown sender UNKNOWN_AE")
    plan, _ = decide_both(HAND_WRITTEN_ENDINGS, "rtplan.dcm", "PLANNING_1")
    assert plan["outcome"] == "drop"
    failed, _ = decide_both(HAND_WRITTEN_ENDINGS, "MR_small.dcm", "MR_WEST_2")
    assert failed["outcome"] == "quarantine" and failed["failed"]

    beams, _ = decide_both(HAND_WRITTEN_SEQUENCES, "rtplan.dcm", "PLANNING_1")
    assert beams["destinations"] == ["PACS_MAIN", "VNA"]
    assert any(".BeamSequence[1]." in edit[0] for edit in beams["edits"])


def test_loop_back_to_the_sender_is_skipped_alike():
    destinations = {name: {"ae_title": None} for name in DESTINATIONS}
    destinations["PACS_MAIN"] = {"ae_title": SAMPLE_CALLING_AET}
    compiled, interpreted = decide_both(generate_rules(40), "CT_small.dcm", SAMPLE_CALLING_AET, destinations)
    assert interpreted == compiled
    assert "PACS_MAIN" not in compiled["destinations"]
    assert any(line.startswith("not sent to PACS_MAIN") for line in compiled["log"])


HAND_WRITTEN_PIXELS = r'''
rule "screens" {
  when DataSet.Modality == "CT" or DataSet.Modality == "MR"
  then {
    blank pixels (0, 0, DataSet.Columns, 10), (5, 5, 2, 2) with 1
    copy to RESEARCH {
      blank pixels (0, 0, 4, 4)
    }
    route to PACS_MAIN
  }
}

rule "plans have no pixels" {
  when DataSet.Modality == "RTPLAN"
  then blank pixels (0, 0, 1, 1)
}

rule "the rest" {
  then route to VNA
}
'''


@pytest.mark.parametrize("file_name, calling_aet", DOCUMENTS)
def test_blank_pixels_agree(file_name, calling_aet):
    compiled, interpreted = decide_both(HAND_WRITTEN_PIXELS, file_name, calling_aet)
    assert interpreted == compiled
    if file_name == "rtplan.dcm":
        assert compiled["outcome"] == "quarantine" and compiled["failed"]
    else:
        assert {edit[0] for edit in compiled["edits"]} == {"DataSet.PixelData"}
        assert {edit[4] for edit in compiled["edits"]} == {None, "RESEARCH"}
