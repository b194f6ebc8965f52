"""What we hold: study queries (``queries``), arrival receipts (``receipt``), checksum
verification (``verify``) and stored instances read back out, as bytes or Part 10 files
(``export``).
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
