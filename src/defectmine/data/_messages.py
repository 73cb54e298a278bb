"""Helpers for error messages that list many files at once."""

from __future__ import annotations

from collections.abc import Sequence

MAX_LISTED = 20


def listing(lines: Sequence[str], limit: int = MAX_LISTED) -> str:
    """Indented bullet lines, at most `limit` of them, then how many more there are."""
    shown = "\n".join(f"  - {line}" for line in lines[:limit])
    more = len(lines) - limit
    return shown + (f"\n  ... and {more} more" if more > 0 else "")
