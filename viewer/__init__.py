"""Everything about showing pixels: the pixel pipeline, previews, (later) deep-zoom tiles."""

from viewer.errors import NoImage, RenderError
from viewer.luts import LookupTable, Preset, Rescale, Window, presets_for
from viewer.pixels import FrameSource, open_frames
from viewer.png import encode_png

__all__ = [
    "FrameSource",
    "LookupTable",
    "NoImage",
    "Preset",
    "RenderError",
    "Rescale",
    "Window",
    "encode_png",
    "open_frames",
    "presets_for",
]
