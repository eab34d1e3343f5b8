"""Text from the API made harmless for a terminal: control characters become visible escapes.

Names, faults and error messages come from other people (any project's user can
name a server). A raw ESC in one could recolour, clear or retitle the terminal of
the admin who lists it, and a bidi override could make ``abc`` read as ``cba``.
So every string the CLI prints passes through :func:`safe`, which writes C0 and
C1 control characters, DEL, line and paragraph separators and the bidi controls
as ``\\x1b`` / ``\\u202e``; everything else, including other non-ASCII letters,
is printed as it is.
"""

from __future__ import annotations

import re

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0, DEL, C1, the Arabic letter mark, LRM/RLM, line/paragraph separators, bidi embeddings,
overrides and isolates."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """``text`` with every character in :data:`UNSAFE` written as a visible escape."""
    return UNSAFE.sub(_escaped, text)


_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
""":data:`UNSAFE` without C0: ``json.dumps`` escapes those inside strings itself, and outside
strings the only ones are the newlines and spaces of indentation."""


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def safe_json(text: str) -> str:
    """A JSON document with :data:`UNSAFE` characters as ``\\uXXXX`` escapes.

    ``json.dumps(..., ensure_ascii=False)`` keeps names like ``café`` readable but
    writes C1 and bidi characters raw; outside strings JSON has only ASCII, so
    replacing them anywhere leaves the same document."""
    return _UNSAFE_IN_JSON.sub(_json_escaped, text)


_UNSAFE_IN_LOG = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
""":data:`UNSAFE` without newline and tab: the layout of a guest's console output."""


def safe_log(text: str) -> str:
    """Multi-line text such as a guest's console with every :data:`UNSAFE` character but
    newline and tab written as a visible escape (a guest's ANSI colours show as ``\\x1b[``)."""
    return _UNSAFE_IN_LOG.sub(_escaped, text)
