"""Previews: the job that builds each frame's deep-zoom pyramid (``builds``), renders
with other windows or lossless tiles on demand (``renders``), and the operators' status and
rebuild (``maintenance``).
"""

from consult.previews.builds import (
    PreviewStatus,
    request_build,
)
from consult.previews.renders import RenderStatus

__all__ = [
    "PreviewStatus",
    "RenderStatus",
    "request_build",
]
