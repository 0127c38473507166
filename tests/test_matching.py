"""C-FIND matching (rulesengine.matching): every kind of matching of PS3.4 C.2.2.2, the
return keys, and what malformed or hostile identifiers do (match nothing, never raise)."""

from __future__ import annotations

import time
from io import BytesIO

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from rulesengine.matching import invalid_keys, matches, response_for


def dataset(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def item(**values) -> Dataset:
    return dataset(**values)


def with_raw(ds: Dataset, tag: int, vr: str, value: bytes) -> Dataset:
    """`ds` with an element as the network gives it, unconverted: pydicom would refuse to set it."""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, True, True)
    return ds


def worklist_item(**overrides) -> Dataset:
    step = item(ScheduledStationAETitle="CT1", Modality="CT", ScheduledProcedureStepStartDate="20260302",
                ScheduledProcedureStepStartTime="093000", ScheduledProcedureStepID="SPS1",
                ScheduledPerformingPhysicianName="Smith^Jane")
    values = dict(PatientName="Müller^Hans", PatientID="P1", AccessionNumber="A1",
                  StudyInstanceUID="1.2.3.4", PatientBirthDate="19700101", PatientSex="M",
                  RequestedProcedureID="RP1", ScheduledProcedureStepSequence=[step])
    values.update(overrides)
    return dataset(**values)


def query_step(**values) -> Dataset:
    return dataset(ScheduledProcedureStepSequence=[item(**values)])


# ---- universal and single value --------------------------------------------------------------


def test_zero_length_keys_and_a_lone_star_match_everything():
    candidate = worklist_item()
    assert matches(dataset(PatientName="", AccessionNumber="", StudyInstanceUID=""), candidate)
    assert matches(dataset(PatientName="*", AccessionNumber="**"), candidate)
    assert matches(Dataset(), candidate)
    # a key the candidate lacks is only a return key when universal
    assert matches(dataset(PatientWeight=None), candidate)
    assert not matches(dataset(PatientWeight="70"), candidate)


def test_single_value_matching_is_exact_and_case_sensitive_names_included():
    candidate = worklist_item()
    assert matches(dataset(PatientID="P1"), candidate)
    assert not matches(dataset(PatientID="p1"), candidate)
    assert not matches(dataset(PatientID="P"), candidate)
    assert matches(dataset(PatientName="Müller^Hans"), candidate)
    assert not matches(dataset(PatientName="MÜLLER^HANS"), candidate)  # as wlmscpfs: case-sensitive


def test_spaces_that_do_not_count():
    candidate = worklist_item(AccessionNumber="A1 ")
    assert matches(dataset(AccessionNumber=" A1"), candidate)
    assert matches(dataset(StudyDescription="text "), dataset(StudyDescription=" text"))  # LO strips both
    assert not matches(dataset(ImageComments=" x"), dataset(ImageComments="x"))  # LT: leading spaces count


def test_an_unknown_value_matches_no_key():
    assert not matches(dataset(PatientSex="M"), worklist_item(PatientSex=""))
    assert not matches(dataset(PatientSex="M"), worklist_item(PatientSex=None))
    assert not matches(dataset(PatientSex="M*"), worklist_item(PatientSex=""))
    assert matches(dataset(PatientSex=""), worklist_item(PatientSex=""))


def test_numbers_compare_as_numbers_and_wrong_values_match_nothing():
    assert matches(dataset(PatientWeight="70.0"), dataset(PatientWeight="70"))
    assert not matches(dataset(PatientWeight="71"), dataset(PatientWeight="70"))
    assert not matches(with_raw(Dataset(), 0x00101030, "DS", b"heavy "), dataset(PatientWeight="70"))
    assert not matches(dataset(PatientWeight="70"), with_raw(Dataset(), 0x00101030, "DS", b"heavy "))
    assert matches(dataset(Rows=512), dataset(Rows=512))
    assert not matches(dataset(Rows=512), dataset(Rows=256))


# ---- wildcards ------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, expected", [
    ("Mü*", True), ("*Hans", True), ("M?ller^Hans", True), ("M?ller*", True), ("*^*", True),
    ("Mu*", False), ("M?ller", False), ("*Hans?", False), ("m*", False),
    ("Müller^Hans*", True),  # * matches nothing too
])
def test_wildcards_in_names(pattern, expected):
    assert matches(dataset(PatientName=pattern), worklist_item()) is expected


def test_regex_characters_in_a_wildcard_are_plain_characters():
    candidate = dataset(AccessionNumber="A.1+(x)[y]")
    assert matches(dataset(AccessionNumber="A.1+(x)[y]*"), candidate)
    assert matches(dataset(AccessionNumber="A.1+(*)[y]"), candidate)
    assert not matches(dataset(AccessionNumber="A?1+(x)[y"), candidate)
    assert not matches(dataset(AccessionNumber="A.*z"), candidate)


def test_wildcards_are_not_wildcards_in_uids_dates_and_numbers():
    assert not matches(dataset(StudyInstanceUID="1.2.*"), worklist_item())
    assert not matches(dataset(StudyInstanceUID="1.2.3.?"), worklist_item())
    assert not matches(dataset(PatientBirthDate="1970*"), worklist_item())
    assert not matches(with_raw(Dataset(), 0x00101030, "DS", b"7*"), dataset(PatientWeight="70"))


def test_a_pattern_that_would_make_a_backtracking_engine_crawl_answers_at_once():
    candidate = dataset(StudyDescription="a" * 60 + "b")
    started = time.perf_counter()
    assert not matches(dataset(StudyDescription="*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c"), candidate)
    assert time.perf_counter() - started < 1


def test_wildcards_match_line_breaks_in_text():
    assert matches(dataset(ImageComments="first*second"), dataset(ImageComments="first\r\nsecond"))


# ---- UID lists --------------------------------------------------------------------------------


def test_a_list_of_uids_matches_any_of_them():
    assert matches(dataset(StudyInstanceUID=["9.9", "1.2.3.4"]), worklist_item())
    assert matches(dataset(StudyInstanceUID="1.2.3.4"), worklist_item())
    assert not matches(dataset(StudyInstanceUID=["9.9", "1.2.3"]), worklist_item())
    assert not matches(dataset(StudyInstanceUID="1.2.3.4.5"), worklist_item())


# ---- ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query, expected", [
    ("19700101", True), ("19691231", False),
    ("19600101-19800101", True), ("19700101-19700101", True), ("19700102-19800101", False),
    ("19700101-", True), ("19700102-", False), ("-19700101", True), ("-19691231", False),
    ("19800101-19600101", False),  # from later to earlier: nothing
])
def test_date_ranges(query, expected):
    assert matches(dataset(PatientBirthDate=query), worklist_item()) is expected


@pytest.mark.parametrize("query", ["2026-03-02", "abc", "20260302-20260303-20260304", "202613", "--",
                                   "20260230", "2026030a-"])
def test_malformed_dates_match_nothing_and_are_reported(query):
    candidate = worklist_item(PatientBirthDate="20260302")
    assert not matches(dataset(PatientBirthDate=query), candidate)
    assert invalid_keys(dataset(PatientBirthDate=query)) == [f"PatientBirthDate: {query!r}"]


def test_a_malformed_value_in_the_candidate_matches_nothing():
    assert not matches(dataset(PatientBirthDate="19700101-"), worklist_item(PatientBirthDate="1st of May"))


@pytest.mark.parametrize("query, expected", [
    ("0930", True), ("093000", True), ("0800-1000", True), ("0931-", False), ("-0930", True), ("09", False),
    ("093000.000-093000.000", True), ("0929-0929", False),
])
def test_time_ranges(query, expected):
    assert matches(query_step(ScheduledProcedureStepStartTime=query), worklist_item()) is expected


@pytest.mark.parametrize("query, expected", [
    ("20260302093000-20260302100000", True),
    ("20260302-20260303", True),
    ("20260302093001-", False),
    ("-20260302093000", True),
    ("20260302083000-0100", True),  # one moment, with an offset: 08:30 at -01:00 is 09:30 UTC
    ("20260302083000-0100-", True),  # a range from a moment with an offset
])
def test_date_time_ranges_with_offsets(query, expected):
    candidate = dataset(AcquisitionDateTime="20260302093000+0000")
    assert matches(dataset(AcquisitionDateTime=query), candidate) is expected


def test_date_and_time_of_a_pair_combine_when_asked_and_match_on_their_own_otherwise():
    # 2 March 09:30; the query: from 1 March 10:00 to 2 March 09:00
    query = query_step(ScheduledProcedureStepStartDate="20260301-20260302",
                       ScheduledProcedureStepStartTime="1000-0900")
    candidate = worklist_item()
    assert not matches(query, candidate, combined_datetime=True)
    query = query_step(ScheduledProcedureStepStartDate="20260301-20260302",
                       ScheduledProcedureStepStartTime="1000-1000")
    assert matches(query, candidate, combined_datetime=True)  # 1 March 10:00 .. 2 March 10:00
    assert not matches(query, candidate, combined_datetime=False)  # 09:30 is not 10:00
    # forms that differ: each on its own, combined or not
    query = query_step(ScheduledProcedureStepStartDate="20260302", ScheduledProcedureStepStartTime="0900-1000")
    assert matches(query, candidate, combined_datetime=True)
    assert matches(query, candidate, combined_datetime=False)


# ---- sequences --------------------------------------------------------------------------------


def test_sequence_matching_needs_one_item_that_matches_every_key():
    two_steps = worklist_item(ScheduledProcedureStepSequence=[
        item(Modality="CT", ScheduledStationAETitle="CT1"), item(Modality="MR", ScheduledStationAETitle="MR1")])
    assert matches(query_step(Modality="MR", ScheduledStationAETitle="MR1"), two_steps)
    assert matches(query_step(Modality="CT"), two_steps)
    assert not matches(query_step(Modality="MR", ScheduledStationAETitle="CT1"), two_steps)  # no single item


def test_empty_sequences_and_empty_items_are_universal():
    assert matches(dataset(ScheduledProcedureStepSequence=[]), worklist_item())
    assert matches(dataset(ScheduledProcedureStepSequence=[Dataset()]), worklist_item())
    assert matches(query_step(Modality="", ScheduledStationAETitle="*"), worklist_item())
    assert matches(dataset(ScheduledProcedureStepSequence=[]), worklist_item(ScheduledProcedureStepSequence=[]))
    assert not matches(query_step(Modality="CT"), worklist_item(ScheduledProcedureStepSequence=[]))
    assert not matches(query_step(Modality="CT"), worklist_item(ScheduledProcedureStepSequence=None))


def test_a_sequence_key_against_a_plain_value_and_back_matches_nothing():
    assert not matches(query_step(Modality="CT"), dataset(ScheduledProcedureStepSequence=[]))
    candidate = Dataset()
    candidate.add_new(0x00400100, "LO", "not a sequence")
    assert not matches(query_step(Modality="CT"), candidate)


def test_multi_valued_candidates_match_on_any_value():
    candidate = worklist_item(ScheduledProcedureStepSequence=[item(ScheduledStationAETitle=["AA32", "AA33"])])
    assert matches(query_step(ScheduledStationAETitle="AA33"), candidate)
    assert matches(query_step(ScheduledStationAETitle="AA3?"), candidate)
    assert not matches(query_step(ScheduledStationAETitle="AA34"), candidate)
    assert matches(query_step(ScheduledStationAETitle=["AA34", "AA32"]), candidate)  # any of the query's too


# ---- character sets ---------------------------------------------------------------------------


def encoded(ds: Dataset, charset: str) -> Dataset:
    """`ds` written in `charset` and read back, as a file or the network gives it."""
    ds = ds.copy()
    ds.SpecificCharacterSet = charset
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def test_text_is_compared_as_decoded_from_each_sides_character_set():
    candidate = encoded(worklist_item(), "ISO_IR 100")
    assert matches(encoded(dataset(PatientName="Müller^Hans"), "ISO_IR 192"), candidate)
    assert matches(encoded(dataset(PatientName="Mü*"), "ISO_IR 192"), candidate)
    assert not matches(encoded(dataset(PatientName="Mu*"), "ISO_IR 192"), candidate)
    greek = encoded(dataset(PatientName="Διονυσιος"), "ISO_IR 126")
    assert matches(encoded(dataset(PatientName="Διον*"), "ISO_IR 192"), greek)


def test_the_response_is_in_the_candidates_character_set_and_encodes():
    candidate = encoded(worklist_item(), "ISO_IR 100")
    response = response_for(encoded(dataset(PatientName=""), "ISO_IR 192"), candidate)
    assert response.SpecificCharacterSet == "ISO_IR 100"
    assert encoded(response, "ISO_IR 100").PatientName == "Müller^Hans"
    plain = response_for(dataset(PatientID=""), worklist_item())
    assert "SpecificCharacterSet" not in plain


# ---- responses --------------------------------------------------------------------------------


def test_the_response_holds_every_key_with_the_candidates_value_or_zero_length():
    identifier = dataset(PatientName="M*", PatientID="", PatientWeight="", OtherPatientIDs="", StudyInstanceUID="")
    response = response_for(identifier, worklist_item())
    assert [e.keyword for e in response] == ["PatientName", "PatientID", "OtherPatientIDs", "PatientWeight",
                                             "StudyInstanceUID"]
    assert response.PatientName == "Müller^Hans"  # the value, not the pattern
    assert response.PatientID == "P1"
    assert response["PatientWeight"].is_empty and response["PatientWeight"].VR == "DS"
    assert response["OtherPatientIDs"].is_empty
    assert "AccessionNumber" not in response  # not asked


def test_sequences_are_answered_item_by_item():
    candidate = worklist_item(ScheduledProcedureStepSequence=[
        item(Modality="CT", ScheduledStationAETitle="CT1", ScheduledProcedureStepID="S1"),
        item(Modality="MR", ScheduledStationAETitle="MR1", ScheduledProcedureStepID="S2")])
    response = response_for(query_step(Modality="MR", ScheduledProcedureStepID="", ScheduledStationName=""), candidate)
    steps = response.ScheduledProcedureStepSequence
    assert len(steps) == 1
    assert steps[0].Modality == "MR" and steps[0].ScheduledProcedureStepID == "S2"
    assert steps[0]["ScheduledStationName"].is_empty
    assert "ScheduledStationAETitle" not in steps[0]
    whole = response_for(dataset(ScheduledProcedureStepSequence=[Dataset()]), candidate)
    assert [s.ScheduledStationAETitle for s in whole.ScheduledProcedureStepSequence] == ["CT1", "MR1"]
    missing = response_for(dataset(ReferencedStudySequence=[Dataset()]), candidate)
    assert missing["ReferencedStudySequence"].VR == "SQ" and len(missing.ReferencedStudySequence) == 0


def test_the_response_is_a_copy():
    candidate = worklist_item()
    response = response_for(dataset(PatientName="", ScheduledProcedureStepSequence=[Dataset()]), candidate)
    response.ScheduledProcedureStepSequence[0].Modality = "XA"
    assert candidate.ScheduledProcedureStepSequence[0].Modality == "CT"


def test_query_retrieve_level_is_echoed_and_never_matched():
    identifier = dataset(QueryRetrieveLevel="STUDY", StudyInstanceUID="")
    assert matches(identifier, worklist_item())
    assert response_for(identifier, worklist_item()).QueryRetrieveLevel == "STUDY"


def test_a_key_pydicom_cannot_read_matches_nothing_and_is_not_answered():
    bad = with_raw(dataset(AccessionNumber=""), 0x00280010, "US", b"\x01")  # Rows, one byte: pydicom raises
    assert not matches(bad, worklist_item(Rows=1))
    response = response_for(bad, worklist_item(Rows=1))
    assert "AccessionNumber" in response and 0x00280010 not in response
    odd = with_raw(Dataset(), 0x00201208, "IS", b"\xff\xfe")  # not a number, read as text
    assert not matches(odd, worklist_item(NumberOfStudyRelatedInstances=1))
    assert response_for(odd, worklist_item())["NumberOfStudyRelatedInstances"].is_empty
