"""Previews: the job that builds each frame's deep-zoom pyramid (``builds``) and renders
with other windows or lossless tiles on demand (``renders``).
"""

from consult.previews.builds import (
    request_build,
)

__all__ = [
    "request_build",
]
