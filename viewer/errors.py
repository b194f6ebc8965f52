"""Why a stored object gives no picture: it has no pixels, or they cannot be shown right."""

from __future__ import annotations


class NoImage(Exception):
    """The object has no pixel data (SR, RT plan, presentation state, PDF, waveform...)."""


class RenderError(Exception):
    """The pixel data cannot be decoded or shown right; the message names why."""
