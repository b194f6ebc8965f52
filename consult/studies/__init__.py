"""What we hold: study queries (``queries``), arrival receipts (``receipt``), checksum
verification (``verify``) and export as Part 10 files (``export``).
"""

from consult.studies.queries import (
    StudyDetail,
    StudySummary,
    get_summary,
    list_audited,
    study_detail,
)

__all__ = [
    "StudyDetail",
    "StudySummary",
    "get_summary",
    "list_audited",
    "study_detail",
]
