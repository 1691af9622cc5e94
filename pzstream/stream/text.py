"""Peer-chosen text as a terminal or a log line may show it."""
from __future__ import annotations

LOGGED_ID_CHARS = 64  # a collector id is the peer's own text: cap what a log line repeats


def printable(text: str, limit: int = LOGGED_ID_CHARS) -> str:
    """``text`` safe for a terminal: control characters (ANSI escapes, NUL, newlines) and other
    unprintable code points as ``\\xNN`` / ``\\uNNNN`` escapes, cut to ``limit`` characters
    with the original length said."""
    head = text[:limit]
    safe = head if head.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    return safe if len(text) <= limit else f"{safe}...({len(text)} chars)"
