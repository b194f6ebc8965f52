"""Everything about showing pixels: rendering frames, previews, (later) deep-zoom tiles."""

from viewer.render import NoImage, RenderedFrame, RenderError, render_frames

__all__ = ["NoImage", "RenderError", "RenderedFrame", "render_frames"]
