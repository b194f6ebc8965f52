"""A signed opinion as a DICOM Basic Text SR (TID 2000), in the study it answers.

The document joins the referring hospital's study as a new series. The Patient and General
Study modules are copied, attribute by named attribute, from the header of one stored
instance of the study (never walked or ``str()``-ed: it came from outside); values are kept
as the sender wrote them so the receiving PACS files the report with its own study.

Content tree (PS3.16 TID 2000; heading codes from CID 7001, which prefers LOINC over the
older DCM equivalents 121060/121070/121072; element codes from CID 7002)::

    CONTAINER (18748-4, LN, "Diagnostic Imaging Report")          root, template DCMR 2000
      HAS CONCEPT MOD  CODE  (121049, DCM, "Language of Content Item and Descendants")
      HAS OBS CONTEXT  PNAME (121008, DCM, "Person Observer Name")            the signer
      HAS OBS CONTEXT  TEXT  (121009, DCM, "Person Observer's Organization Name")
      CONTAINS CONTAINER (55115-0, LN, "Request")        when the question is not empty
        CONTAINS TEXT (55115-0, LN, "Request")                 the consultation question
      CONTAINS CONTAINER (19005-8, LN, "Impressions")
        CONTAINS TEXT (121073, DCM, "Impression")                    the opinion, verbatim

Times: VerificationDateTime carries an explicit ``+0000``. ContentDate/Time (the signing)
and InstanceCreationDate/Time are written in UTC too; Timezone Offset From UTC is not set,
because the copied study date and time are the sender's local time and must stay so.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydicom import config, dcmwrite
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, BasicTextSRStorage, ExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from consult.dicom import identifiers
from consult.dicom.part10 import file_meta
from consult.errors import InvalidDataset

log = logging.getLogger(__name__)

MANUFACTURER = "consult"
SERIES_NUMBER = 9001
SERIES_DESCRIPTION = "Consultation opinion"
DCMR_UID = "1.2.840.10008.8.1.1"  # the DICOM Content Mapping Resource

Code = tuple[str, str, str]  # (value, scheme designator, meaning)

REPORT_TITLE: Code = ("18748-4", "LN", "Diagnostic Imaging Report")  # CID 7000
LANGUAGE_OF_CONTENT: Code = ("121049", "DCM", "Language of Content Item and Descendants")
PERSON_OBSERVER_NAME: Code = ("121008", "DCM", "Person Observer Name")
PERSON_OBSERVER_ORGANIZATION: Code = ("121009", "DCM", "Person Observer's Organization Name")
REQUEST_HEADING: Code = ("55115-0", "LN", "Request")  # CID 7001
REQUEST_ELEMENT: Code = ("55115-0", "LN", "Request")  # CID 7002
IMPRESSIONS_HEADING: Code = ("19005-8", "LN", "Impressions")  # CID 7001
IMPRESSION_ELEMENT: Code = ("121073", "DCM", "Impression")  # CID 7002

# Longest copied value we accept (characters); the VRs allow 64 (324 for a PN), a hostile
# header may hold megabytes.
_COPY_LIMIT = 1024
_MAX_OTHER_IDS = 32

_PATIENT = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
_PATIENT_TYPE2 = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex"}
_STUDY = (
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
_STUDY_TYPE2 = {"StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"}
_OTHER_ID = ("PatientID", "IssuerOfPatientID", "TypeOfPatientID")


@dataclass(frozen=True)
class OpinionDocument:
    """What goes into the SR besides the copied patient and study."""

    text: str
    """The signed opinion, verbatim."""
    signer_name: str
    """Display name of the signing specialist."""
    signer_hospital: str
    """The signer's (consulting) hospital."""
    signed_at: datetime
    """When it was signed (timezone-aware; converted to UTC)."""
    sha256: str
    """SHA-256 of the signed text, as recorded at signing."""
    question: str
    """The consultation question (may be empty)."""
    sr_series_uid: str
    sr_sop_instance_uid: str
    institution_name: str
    """Our institution, written as the creator's Institution Name."""
    ae_title: str
    """Our AE title (Source Application Entity Title, Station Name)."""
    instance_number: int = 1
    language: Code = field(default=("en", "RFC5646", "English"))
    """Language of the content (CID 5000, RFC 5646 tag)."""


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _concept(item: Dataset, code: Code) -> None:
    item.ConceptNameCodeSequence = Sequence([_code_item(code)])


def _container(relationship: str | None, code: Code, children: list[Dataset]) -> Dataset:
    item = Dataset()
    if relationship is not None:
        item.RelationshipType = relationship
    item.ValueType = "CONTAINER"
    _concept(item, code)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(children)
    return item


def _text(relationship: str, code: Code, value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "TEXT"
    _concept(item, code)
    item.TextValue = value  # UT: unlimited length, backslash is no separator
    return item


def _pname(relationship: str, code: Code, value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "PNAME"
    _concept(item, code)
    item.PersonName = value
    return item


def _code(relationship: str, code: Code, value: Code) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "CODE"
    _concept(item, code)
    item.ConceptCodeSequence = Sequence([_code_item(value)])
    return item


def person_name(display_name: str) -> str:
    """A display name as a one-component DICOM PN (no ``^ = \\``, at most 64 characters)."""
    cleaned = "".join(" " if c in "^=\\" or not c.isprintable() else c for c in display_name)
    return " ".join(cleaned.split())[:64]


def _lo(value: str) -> str:
    """Our own text for an LO attribute: printable, no backslash, at most 64 characters."""
    cleaned = "".join(" " if c == "\\" or not c.isprintable() else c for c in value)
    return " ".join(cleaned.split())[:64]


def _da(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def _tm(moment: datetime) -> str:
    return moment.strftime("%H%M%S.%f")


def _dt_utc(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S.%f") + "+0000"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"a timezone-aware datetime is needed, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _copied_value(src: Dataset, keyword: str) -> str | None:
    """An attribute of an untrusted dataset as text, or None when absent or unusable."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in src:
        return None
    try:
        elem = src[tag]
        if elem.value is None:
            return None
        value = elem.value
        if isinstance(value, MultiValue):
            parts = list(value)
            if not all(isinstance(p, str | PersonName) for p in parts):
                return None
            text = "\\".join(str(p) for p in parts)
        elif isinstance(value, str | PersonName):
            text = str(value)
        else:  # bytes, numbers: the sender used a VR this attribute cannot have
            return None
    except Exception:  # undecodable value: leave it out rather than fail the export
        log.warning("cannot copy %s from the study header", keyword)
        return None
    # The VRs copied here allow no control characters (ISO 2022 escapes are decoded away).
    text = "".join(c for c in text if unicodedata.category(c) != "Cc")
    if len(text) > _COPY_LIMIT:
        log.warning("%s in the study header is %d characters long; left out", keyword, len(text))
        return None
    return text


def _put(dst: Dataset, keyword: str, text: str) -> None:
    """Set an attribute to a copied value as written by the sender, without re-validating."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    dst.add(DataElement(tag, dictionary_VR(tag), text, validation_mode=config.IGNORE))


def _copy(dst: Dataset, src: Dataset, keywords: tuple[str, ...], type2: set[str]) -> None:
    for keyword in keywords:
        text = _copied_value(src, keyword)
        if text is not None:
            _put(dst, keyword, text)
        elif keyword in type2:
            _put(dst, keyword, "")


def _copy_other_ids(dst: Dataset, src: Dataset) -> None:
    try:
        items = src.get("OtherPatientIDsSequence")
        if not isinstance(items, Sequence):
            return
        source_items = [item for item in list(items)[:_MAX_OTHER_IDS] if isinstance(item, Dataset)]
    except Exception:
        log.warning("cannot copy OtherPatientIDsSequence from the study header")
        return
    copied = []
    for source_item in source_items:
        item = Dataset()
        _copy(item, source_item, _OTHER_ID, set())
        if "PatientID" in item:
            copied.append(item)
    if copied:
        dst.OtherPatientIDsSequence = Sequence(copied)


def build_sr(
    header: Dataset, opinion: OpinionDocument, *, created_at: datetime | None = None
) -> Dataset:
    """The Basic Text SR of ``opinion`` in the study of ``header`` (an untrusted dataset)."""
    study_uid = identifiers.uid(
        header.get("StudyInstanceUID"), "Study Instance UID", error=InvalidDataset
    )
    series_uid = identifiers.uid(
        opinion.sr_series_uid, "SR Series Instance UID", error=InvalidDataset
    )
    sop_uid = identifiers.uid(
        opinion.sr_sop_instance_uid, "SR SOP Instance UID", error=InvalidDataset
    )
    signed = _utc(opinion.signed_at)
    created = _utc(created_at or datetime.now(UTC))
    signer = person_name(opinion.signer_name)

    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = UID(sop_uid)
    ds.InstanceCreationDate = _da(created)
    ds.InstanceCreationTime = _tm(created)
    # Patient, General Study: copied as the sender wrote them
    _copy(ds, header, _PATIENT, _PATIENT_TYPE2)
    _copy_other_ids(ds, header)
    _put(ds, "StudyInstanceUID", study_uid)
    _copy(ds, header, _STUDY, _STUDY_TYPE2)
    # SR Document Series: a new series of ours
    ds.Modality = "SR"
    ds.SeriesInstanceUID = UID(series_uid)
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = _lo(opinion.institution_name)
    ds.StationName = _lo(opinion.ae_title)[:16]
    # SR Document General
    ds.InstanceNumber = opinion.instance_number
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    ds.ContentDate = _da(signed)
    ds.ContentTime = _tm(signed)
    observer = Dataset()
    observer.VerifyingObserverName = signer
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    observer.VerifyingOrganization = _lo(opinion.signer_hospital)
    observer.VerificationDateTime = _dt_utc(signed)
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.PerformedProcedureCodeSequence = Sequence()
    # SR Document Content: the root container and its tree
    ds.ValueType = "CONTAINER"
    _concept(ds, REPORT_TITLE)
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.MappingResourceUID = DCMR_UID
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = Sequence([template])
    children = [
        _code("HAS CONCEPT MOD", LANGUAGE_OF_CONTENT, opinion.language),
        _pname("HAS OBS CONTEXT", PERSON_OBSERVER_NAME, signer),
    ]
    if opinion.signer_hospital.strip():
        children.append(
            _text("HAS OBS CONTEXT", PERSON_OBSERVER_ORGANIZATION, opinion.signer_hospital)
        )
    if opinion.question.strip():
        children.append(
            _container(
                "CONTAINS", REQUEST_HEADING, [_text("CONTAINS", REQUEST_ELEMENT, opinion.question)]
            )
        )
    children.append(
        _container(
            "CONTAINS", IMPRESSIONS_HEADING, [_text("CONTAINS", IMPRESSION_ELEMENT, opinion.text)]
        )
    )
    ds.ContentSequence = Sequence(children)
    return ds


def to_part10(ds: Dataset, *, ae_title: str) -> bytes:
    """``ds`` as a Part 10 file in Explicit VR Little Endian, with our file meta."""
    ds.file_meta = file_meta(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        source_ae=ae_title,
    )
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
