"""Who may see what: the one access check (``check``), hospitals, peers and users
(``directory``), logins and sessions (``auth``), the audit log (``audit``).
"""

from consult.access.check import (
    StudyRef,
    deny,
    require_consultation,
    require_preview,
    require_study,
    takes_part,
    taking_part,
)

__all__ = [
    "StudyRef",
    "deny",
    "require_consultation",
    "require_preview",
    "require_study",
    "takes_part",
    "taking_part",
]
