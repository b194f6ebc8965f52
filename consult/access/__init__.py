"""Who may see what: the one access check (``check``), hospitals, peers and users
(``directory``), logins and sessions (``auth``), the audit log (``audit``).
"""

from consult.access.check import (
    StudyRef,
    require_consultation,
    require_preview,
    require_study,
    valid_uid,
)

__all__ = [
    "StudyRef",
    "require_consultation",
    "require_preview",
    "require_study",
    "valid_uid",
]
