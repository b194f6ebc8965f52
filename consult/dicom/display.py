"""DICOM values as people read and sort them: person names, numbers kept as text."""

from __future__ import annotations


def display_name(person_name: str) -> str:
    """A DICOM person name (``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``) for display."""
    alphabetic = person_name.split("=", 1)[0]
    parts = [p.strip() for p in alphabetic.split("^")]
    family, given = [*parts, "", ""][:2]
    rest = " ".join(p for p in parts[2:] if p)
    if family and (given or rest):
        return f"{family}, {' '.join(p for p in (given, rest) if p)}"
    return family or given or rest


def number_key(value: str) -> tuple[int, int, str]:
    """Sort key of an IS value kept as text (Instance Number, Series Number): numbers in
    numeric order first, anything else after them in text order."""
    stripped = value.strip()
    return (0, int(stripped), "") if stripped.isdigit() else (1, 0, stripped)
