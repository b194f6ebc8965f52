"""The one rule for UIDs and the one rule for AE titles, and each caller's own error type."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from consult.access import directory
from consult.catalog import Catalog
from consult.cli.imaging import uid_argument
from consult.dicom import identifiers
from consult.dicom.identifiers import IdentifierError
from consult.dicom.sender import Unsendable, inspect_file, parse_destination
from consult.dicom.synthetic import demo_study, write_part10
from consult.errors import BadRequest, ConfigurationError, InvalidDataset
from consult.ingest.pipeline import check_uid
from consult.settings import load_settings

# fmt: off
UIDS: list[tuple[str, bool, str]] = [
    ("1.2.840.10008.5.1.4.1.1.2", True, "a conformant UID"),
    ("1.2.826.0.1.3680043.8.498.1a2b3c4d5e6f", True, "a hexadecimal last component"),
    ("1.2.3a", True, "a letter in a component"),
    ("1.2.840.0012.3ABC", True, "leading zeros and upper-case hex"),
    ("1.2.3_4-5+6", True, "_ - + inside a component"),
    ("1" * 64, True, "64 characters"),
    ("1" * 65, False, "65 characters"),
    ("..", False, "a parent folder"),
    (".", False, "the current folder"),
    ("1..2", False, "an empty component"),
    (".1.2", False, "a leading dot"),
    ("1.2.", False, "a trailing dot"),
    ("../../etc/passwd", False, "a path"),
    ("1.2/3", False, "a slash"),
    ("1.2\\3", False, "a backslash"),
    ("1.2 3", False, "a space"),
    (" 1.2", False, "a leading space"),
    ("1.2\t3", False, "a tab"),
    ("1.2\n3", False, "a line break (log lines)"),
    ("1.2\x003", False, "a NUL inside"),
    ("1.2\x7f", False, "DEL"),
    ("1.2.3é", False, "non-ASCII"),
    ("1.2.٣", False, "a non-ASCII digit"),
    ("%2e%2e", False, "percent-encoded dots"),
    ("1.2%20", False, "a percent sign"),
    ("1.2?x=1", False, "a query"),
    ("1.2#x", False, "a fragment"),
    ("1.2;x", False, "a path parameter"),
    ("1.2:3", False, "a colon"),
]
# fmt: on


@pytest.mark.parametrize(("text", "accepted", "what"), UIDS, ids=[u[2] for u in UIDS])
def test_uid_rule(text: str, accepted: bool, what: str) -> None:
    assert identifiers.is_uid(text) is accepted
    if accepted:
        assert identifiers.uid(text) == text
    else:
        with pytest.raises(IdentifierError) as info:
            identifiers.uid(text, "Study Instance UID")
        assert not info.value.missing
        assert str(info.value).startswith("Study Instance UID ")


def test_uid_padding_is_stripped_but_only_by_uid() -> None:
    assert identifiers.uid("1.2.3\x00") == "1.2.3"  # UI values are padded with a NUL
    assert identifiers.uid("1.2.3 ") == "1.2.3"
    assert not identifiers.is_uid("1.2.3\x00")  # a URL or argument is taken as given


@pytest.mark.parametrize("value", [None, "", "\x00", "  "])
def test_missing_uid(value: object) -> None:
    with pytest.raises(IdentifierError, match="SOP Instance UID is missing") as info:
        identifiers.uid(value, "SOP Instance UID")
    assert info.value.missing


@pytest.mark.parametrize(
    ("text", "status"), [("", 0xC002), ("1.2/3", 0xC003), ("1" * 65, 0xC003), ("1.2a", None)]
)
def test_ingest_turns_the_rule_into_c_store_statuses(text: str, status: int | None) -> None:
    if status is None:
        assert check_uid(text, "Study Instance UID") == text
        return
    with pytest.raises(InvalidDataset) as info:
        check_uid(text, "Study Instance UID")
    assert info.value.dicom_status == status


# fmt: off
AE_TITLES: list[tuple[str, str | None]] = [
    ("CONSULT", "CONSULT"),
    ("  PACS ", "PACS"),  # leading and trailing spaces are not significant
    ("A B", "A B"),
    ("A" * 16, "A" * 16),
    ("X" * 16 + "  ", "X" * 16),
    ("!#$%&'()*+,-./:", "!#$%&'()*+,-./:"),
    ("", None),
    ("    ", None),
    ("A" * 17, None),
    ("BACK\\SLASH", None),
    ("TAB\tBED", None),
    ("LINE\n", None),
    ("ÄRZTE", None),
    ("NUL\x00", None),
]
# fmt: on


@pytest.mark.parametrize(("text", "cleaned"), AE_TITLES)
def test_ae_title_rule(text: str, cleaned: str | None) -> None:
    if cleaned is not None:
        assert identifiers.ae_title(text) == cleaned
        return
    with pytest.raises(IdentifierError, match=r"^AE title must be 1-16 printable ASCII"):
        identifiers.ae_title(text)


@pytest.mark.parametrize(("text", "cleaned"), AE_TITLES)
def test_every_ae_title_caller_applies_the_rule_with_its_own_error(
    text: str, cleaned: str | None, tmp_path: Path
) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    catalog.migrate()
    try:

        def add_peer() -> str:
            with catalog.write() as conn:
                hospital = directory.add_hospital(conn, "North")
                return directory.add_peer(conn, hospital, text, "127.0.0.1").ae_title

        callers: list[tuple[Callable[[], str], type[Exception], str]] = [
            (lambda: load_settings(ae_title=text).ae_title, ConfigurationError, "CONSULT_AE_TITLE"),
            (lambda: parse_destination(f"{text}@host:104").ae_title, ConfigurationError, "--to"),
            (add_peer, BadRequest, "peer AE title"),
        ]
        for call, error, name in callers:
            if cleaned is None:
                with pytest.raises(error, match=name):
                    call()
            else:
                assert call() == cleaned
    finally:
        catalog.dispose()


def test_a_caller_may_name_its_own_error_type() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--study has characters"):
        identifiers.uid("1/2", "--study", error=argparse.ArgumentTypeError)
    with pytest.raises(BadRequest, match=r"^peer AE title must be"):
        identifiers.ae_title("", "peer AE title", error=BadRequest)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(("uid", "sendable"), [("1.2.3a", True), ("../x", False), ("1.2 3", False)])
def test_consult_send_reports_a_file_whose_uids_ingest_would_refuse(
    tmp_path: Path, uid: str, sendable: bool
) -> None:
    ds, ts = demo_study()[0]
    ds.SOPInstanceUID = uid
    path = tmp_path / "file.dcm"
    write_part10(ds, ts, path)
    if sendable:
        assert inspect_file(path).sop_instance_uid == uid
        return
    with pytest.raises(Unsendable, match=r"^SOP Instance UID "):
        inspect_file(path)


def test_consult_render_takes_a_uid_argument() -> None:
    assert uid_argument("1.2.3a") == "1.2.3a"
    with pytest.raises(argparse.ArgumentTypeError, match=r"'1\.2/3' has characters"):
        uid_argument("1.2/3")
