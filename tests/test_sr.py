"""The opinion as a Basic Text SR: identity, copied patient and study, TID 2000 tree, UTF-8."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydicom import config, dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

from consult.consultations.sr import OpinionDocument, build_sr, person_name, to_part10
from consult.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from consult.errors import InvalidDataset
from tests.support import require_tool, sample

TEXT = "Befund: kein Hinweis auf Malignität.\r\nEmpfehlung: Kontrolle in 6 Monaten \\ MRT."
SIGNED = datetime(2024, 5, 6, 9, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def document(**changes: Any) -> OpinionDocument:
    base = OpinionDocument(
        text=TEXT,
        signer_name="Dr. Anna Müller",
        signer_hospital="Klinikum Süd",
        signed_at=SIGNED,
        sha256="ab" * 32,
        question="Raumforderung in der Leber?",
        sr_series_uid=generate_uid(),
        sr_sop_instance_uid=generate_uid(),
        institution_name="Klinikum Süd",
        ae_title="CONSULT",
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def header() -> Dataset:
    return dcmread(sample("pydicom__CT_small.dcm"), stop_before_pixels=True)


def codes(item: Dataset) -> tuple[str, str, str]:
    code = item.ConceptNameCodeSequence[0]
    return (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning)


def test_sr_is_a_new_series_in_the_study(header: Dataset) -> None:
    doc = document()
    ds = build_sr(header, doc)
    assert ds.SOPClassUID == BasicTextSRStorage
    assert ds.SOPInstanceUID == doc.sr_sop_instance_uid
    assert ds.SeriesInstanceUID == doc.sr_series_uid != header.SeriesInstanceUID
    assert ds.StudyInstanceUID == header.StudyInstanceUID
    assert ds.Modality == "SR"
    assert ds.SeriesNumber == 9001
    assert ds.SeriesDescription == "Consultation opinion"
    assert ds.InstanceNumber == 1
    assert ds.ReferencedPerformedProcedureStepSequence == []
    assert ds.PerformedProcedureCodeSequence == []


def test_patient_and_study_are_copied_as_sent(header: Dataset) -> None:
    ds = build_sr(header, document())
    for keyword in COPIED:
        assert str(ds[keyword].value) == str(header[keyword].value), keyword
    assert "IssuerOfPatientID" not in ds  # absent in the source, Type 3: left out
    assert ds.PatientName == "CompressedSamples^CT1"


def test_document_is_complete_and_verified_by_the_signer(header: Dataset) -> None:
    ds = build_sr(header, document(), created_at=datetime(2024, 5, 7, 1, 2, 3, tzinfo=UTC))
    assert ds.CompletionFlag == "COMPLETE"
    assert ds.VerificationFlag == "VERIFIED"
    [observer] = ds.VerifyingObserverSequence
    assert observer.VerifyingObserverName == "Dr. Anna Müller"
    assert observer.VerifyingOrganization == "Klinikum Süd"
    assert observer.VerificationDateTime == "20240506070809.123456+0000"  # UTC, explicit
    assert observer.VerifyingObserverIdentificationCodeSequence == []
    assert (ds.ContentDate, ds.ContentTime) == ("20240506", "070809.123456")
    assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == ("20240507", "010203.000000")
    assert "TimezoneOffsetFromUTC" not in ds  # the copied study times are the sender's local


def test_content_tree_follows_tid_2000(header: Dataset) -> None:
    ds = build_sr(header, document())
    assert ds.ValueType == "CONTAINER"
    assert codes(ds) == ("18748-4", "LN", "Diagnostic Imaging Report")
    assert ds.ContinuityOfContent == "SEPARATE"
    [template] = ds.ContentTemplateSequence
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "2000")

    language, observer, organization, request, impressions = ds.ContentSequence
    assert (language.RelationshipType, language.ValueType) == ("HAS CONCEPT MOD", "CODE")
    assert codes(language) == ("121049", "DCM", "Language of Content Item and Descendants")
    assert language.ConceptCodeSequence[0].CodingSchemeDesignator == "RFC5646"
    assert (observer.RelationshipType, observer.ValueType) == ("HAS OBS CONTEXT", "PNAME")
    assert codes(observer) == ("121008", "DCM", "Person Observer Name")
    assert observer.PersonName == "Dr. Anna Müller"
    assert codes(organization) == ("121009", "DCM", "Person Observer's Organization Name")
    assert organization.TextValue == "Klinikum Süd"

    assert (request.RelationshipType, request.ValueType) == ("CONTAINS", "CONTAINER")
    assert codes(request) == ("55115-0", "LN", "Request")
    [question] = request.ContentSequence
    assert (question.RelationshipType, question.ValueType) == ("CONTAINS", "TEXT")
    assert codes(question) == ("55115-0", "LN", "Request")
    assert question.TextValue == "Raumforderung in der Leber?"

    assert codes(impressions) == ("19005-8", "LN", "Impressions")
    [impression] = impressions.ContentSequence
    assert (impression.RelationshipType, impression.ValueType) == ("CONTAINS", "TEXT")
    assert codes(impression) == ("121073", "DCM", "Impression")
    assert impression.TextValue == TEXT


def test_empty_question_leaves_out_the_request_section(header: Dataset) -> None:
    ds = build_sr(header, document(question="  "))
    assert [codes(item)[2] for item in ds.ContentSequence] == [
        "Language of Content Item and Descendants",
        "Person Observer Name",
        "Person Observer's Organization Name",
        "Impressions",
    ]


def test_part10_is_explicit_little_endian_utf8_with_our_meta(header: Dataset) -> None:
    doc = document()
    blob = to_part10(build_sr(header, doc), ae_title="CONSULT")
    assert blob[128:132] == b"DICM"
    assert "Malignität".encode() in blob  # UTF-8 on the wire
    back = dcmread(io.BytesIO(blob))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPClassUID == BasicTextSRStorage
    assert back.file_meta.MediaStorageSOPInstanceUID == doc.sr_sop_instance_uid
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert back.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert back.file_meta.SourceApplicationEntityTitle == "CONSULT"
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.ContentSequence[-1].ContentSequence[0].TextValue == TEXT


def test_japanese_patient_name_survives_as_utf8() -> None:
    header = dcmread(sample("pydicom__chrH32.dcm"), stop_before_pixels=True)
    blob = to_part10(build_sr(header, document()), ae_title="CONSULT")
    back = dcmread(io.BytesIO(blob))
    assert str(back.PatientName) == str(header.PatientName)
    assert "山田" in str(back.PatientName)


def _hostile_header() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.add(DataElement(0x00100020, "LO", "X" * 5000, validation_mode=config.IGNORE))
    ds.add(DataElement(0x00100010, "PN", "Doe^Jane", validation_mode=config.IGNORE))
    ds.add(DataElement(0x00080020, "DA", "2024-01-02", validation_mode=config.IGNORE))
    ds.add(DataElement(0x00100030, "DA", "\x01\x02", validation_mode=config.IGNORE))
    other = Dataset()
    other.PatientID = "A-77"
    other.IssuerOfPatientID = "OTHER"
    other.PatientName = "Must^NotCopy"
    ds.OtherPatientIDsSequence = Sequence([other, Dataset()])
    return ds


def test_hostile_header_values_are_bounded_and_named_attributes_only() -> None:
    ds = build_sr(_hostile_header(), document())
    assert ds.PatientID == ""  # 5000 characters: left out, Type 2 stays present and empty
    assert ds.PatientBirthDate == ""  # control characters are dropped
    assert ds.StudyDate == "2024-01-02"  # non-conformant but harmless: kept as sent
    assert ds.PatientName == "Doe^Jane"
    [other] = ds.OtherPatientIDsSequence
    assert (other.PatientID, other.IssuerOfPatientID) == ("A-77", "OTHER")
    assert "PatientName" not in other
    to_part10(ds, ae_title="CONSULT")  # still writable


@pytest.mark.parametrize("uid", ["", "../../etc/passwd", "1.2.3 4"])
def test_hostile_study_uid_is_refused(uid: str) -> None:
    header = _hostile_header()
    header.add(DataElement(0x0020000D, "UI", uid, validation_mode=config.IGNORE))
    with pytest.raises(InvalidDataset):
        build_sr(header, document())


def test_naive_signing_time_is_refused(header: Dataset) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_sr(header, document(signed_at=datetime(2024, 1, 1)))


def test_person_name_is_one_clean_component() -> None:
    assert person_name("Dr. A^B=C\\D\n  E") == "Dr. A B C D E"
    assert len(person_name("x" * 300)) == 64


def dsr_tools() -> tuple[str, str]:
    return require_tool("dsrdump", "dcmtk"), require_tool("dsr2xml", "dcmtk")


def dump(path: Path) -> tuple[str, str]:
    """dsrdump's rendering (all codes, long values) and dsr2xml's (which has the UIDs)."""
    dsrdump, dsr2xml = dsr_tools()
    text = subprocess.run(
        [dsrdump, "+Pc", "+Pl", "+Pt", str(path)], capture_output=True, check=True, timeout=30
    ).stdout.decode("utf-8")
    xml = subprocess.run(
        [dsr2xml, str(path)], capture_output=True, check=True, timeout=30
    ).stdout.decode("utf-8")
    return text, xml


def test_dcmtk_reads_the_written_file(header: Dataset, tmp_path: Path) -> None:
    dsr_tools()
    path = tmp_path / "opinion.dcm"
    path.write_bytes(to_part10(build_sr(header, document()), ae_title="CONSULT"))
    text, xml = dump(path)
    assert "Basic Text SR Document" in text
    assert "Verification Flag   : VERIFIED" in text
    assert "Befund: kein Hinweis auf Malignität." in text
    assert '(19005-8,LN,"Impressions")' in text
    assert "TID 2000 (DCMR" in text
    assert f'<study uid="{header.StudyInstanceUID}">' in xml
