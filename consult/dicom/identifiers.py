"""DICOM identifiers from outside: UIDs and AE titles, one rule each.

Everything that takes a UID (ingest, the web routes, the command line, the SR builder)
asks :func:`uid` or :func:`is_uid`, so a UID that ingest stores is a UID the web serves;
everything that takes an AE title (the settings, the peer directory, ``consult send``)
asks :func:`ae_title`.

UIDs: PS3.5 9.1 allows digits and dots only. Real equipment sends worse (hexadecimal
components, leading zeros), and refusing what is harmless would lose studies, so the rule
is wider: at most 64 characters, components separated by single dots, each made of ASCII
letters, digits, ``_``, ``-`` or ``+``. That still keeps out everything that could act as
a path or break a log line or a URL: ``/``, ``\\``, ``.`` and ``..`` (no empty component),
spaces, control characters, non-ASCII, ``%``, ``?``, ``#``.

AE titles: PS3.5 6.2 (VR AE): 1-16 characters of the default repertoire, no backslash,
no control characters; leading and trailing spaces are not significant, so they are
stripped, and a title of spaces only is no title.

Each function raises :class:`IdentifierError` (a ``ValueError``, which pydantic turns
into a validation error), or, given ``error=``, the caller's own error type with the same
message naming the identifier: ``ae_title(text, "--aet", error=ConfigurationError)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

UID_MAX_LENGTH = 64
AE_TITLE_MAX_LENGTH = 16

_UID = re.compile(r"[0-9A-Za-z_+-]+(?:\.[0-9A-Za-z_+-]+)*")
_AE_CHARACTERS = frozenset(chr(c) for c in range(32, 127)) - {"\\"}

ErrorType = Callable[[str], Exception]


class IdentifierError(ValueError):
    """A UID or AE title that breaks its rule; the message names it and says why.

    ``missing`` is true when there was no value at all (ingest answers 0xC002 then, and
    0xC003 for a value it refuses).
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def is_uid(text: str) -> bool:
    """Whether ``text``, exactly as given (no padding stripped), is a UID we accept."""
    return len(text) <= UID_MAX_LENGTH and _UID.fullmatch(text) is not None


def uid(value: object, name: str = "UID", *, error: ErrorType | None = None) -> str:
    """``value`` as a UID, its DICOM padding (trailing NULs and spaces) stripped.

    Raises :class:`IdentifierError` (or ``error(message)``) when it is missing or breaks
    the rule. The message names ``name`` but not the value, which may be hostile.
    """
    text = ("" if value is None else str(value)).rstrip("\x00 ")
    if not text:
        problem = IdentifierError(f"{name} is missing", missing=True)
    elif len(text) > UID_MAX_LENGTH:
        problem = IdentifierError(f"{name} is longer than {UID_MAX_LENGTH} characters")
    elif not is_uid(text):
        problem = IdentifierError(f"{name} has characters a UID cannot have")
    else:
        return text
    raise problem if error is None else error(str(problem))


def ae_title(value: str, name: str = "AE title", *, error: ErrorType | None = None) -> str:
    """``value`` as an AE title, leading and trailing spaces stripped.

    Raises :class:`IdentifierError` (or ``error(message)``) naming ``name`` and the value.
    """
    stripped = value.strip(" ")
    if 0 < len(stripped) <= AE_TITLE_MAX_LENGTH and _AE_CHARACTERS.issuperset(value):
        return stripped
    message = (
        f"{name} must be 1-{AE_TITLE_MAX_LENGTH} printable ASCII characters other than "
        f"backslash, not only spaces; got {value[:40]!r}"
    )
    raise IdentifierError(message) if error is None else error(message)
