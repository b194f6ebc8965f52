"""Everything about showing pixels: the pixel pipeline, previews, (later) deep-zoom tiles."""

from viewer.errors import NoImage, RenderError
from viewer.luts import LookupTable, Preset, Rescale, Window, presets_for
from viewer.pixels import FrameSource, open_frames
from viewer.png import RenderedFrame, encode_png, render_frames

__all__ = [
    "FrameSource",
    "LookupTable",
    "NoImage",
    "Preset",
    "RenderError",
    "RenderedFrame",
    "Rescale",
    "Window",
    "encode_png",
    "open_frames",
    "presets_for",
    "render_frames",
]
