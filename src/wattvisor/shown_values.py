"""Values as error messages and logs show them back: bounded, and with no character that
could break or forge what is shown.

Ids and names reach error messages unchecked (from a URL path, a request body, a
flavor's extra specs) and may be kilobytes long or hold control and bidi characters:
one helper cuts them after ``limit`` characters, saying how long they were, and
escapes what a name may not hold.
"""

from __future__ import annotations

import unicodedata

ECHO_LIMIT = 64
"""Characters of a value an error message shows before cutting it."""
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def is_printable(char: str) -> bool:
    """True for a character a name may hold (not Unicode's "other" categories, nor the
    line and paragraph separators)."""
    return unicodedata.category(char) not in _REFUSED_CATEGORIES


def shown(value: object, limit: int = ECHO_LIMIT, *, quote: bool = True) -> str:
    """``value`` as a message shows it, cut after ``limit`` characters with its length
    said. Quoted (``repr``, which escapes what is not printable), or with ``quote=False``
    bare, each refused character as ``\\uXXXX``. A value that is no string is its repr."""
    if not isinstance(value, str):
        return repr(value)
    head = value[:limit]
    if quote:
        text = repr(head)
    else:
        text = "".join(c if is_printable(c) else f"\\u{ord(c):04x}" for c in head)
    return text if len(value) <= limit else f"{text}... ({len(value)} characters)"
