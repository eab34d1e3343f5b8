"""Names people give things: printable text only, one rule for the API and the service layer.

A name (of a server, flavor, image, volume, user, project, host) ends up in tables, logs,
libvirt XML and the guest's metadata. Control characters break those (a NUL makes the
domain XML unwritable, so the server fails later instead of the request now; ESC
sequences drive the terminal of whoever lists the name), and Unicode format characters
make one name look like another: bidi overrides and isolates reorder what is shown
(``U+202E``), zero-width characters and the BOM hide inside a name. Like Nova's name
check, every character of Unicode's "other" categories (control, format, surrogate,
private use, unassigned) and the line and paragraph separators is refused; ordinary
spaces and every letter, mark, number, symbol and punctuation are accepted.

:data:`PrintableText` is the pydantic type the API's schemas use (a 422 naming the
field); :func:`require_printable` is the same check for the service layer, so that
callers other than the API (start-up defaults, the CLI on the controller) meet it too.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

from wattvisor.compute.errors import InvalidRequest
from wattvisor.shown_values import ECHO_LIMIT as ECHO_LIMIT
from wattvisor.shown_values import is_printable as is_printable
from wattvisor.shown_values import shown


class UnprintableText(ValueError):
    """Text holding a character that names may not hold; says which one and where."""

    def __init__(self, field: str, index: int, char: str) -> None:
        super().__init__(
            f"{field} contains {describe(char)} at position {index}; names may not hold "
            "control characters, bidi overrides or other invisible format characters"
        )
        self.field = field
        self.index = index
        self.char = char


def describe(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a character by code point and name."""
    name = unicodedata.name(char, "") or _CONTROL_NAMES.get(ord(char), "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


_CONTROL_NAMES = {0x00: "NULL", 0x09: "TAB", 0x0A: "LINE FEED", 0x0D: "CARRIAGE RETURN",
                  0x1B: "ESCAPE", 0x7F: "DELETE"}  # fmt: skip


def check_printable(value: str, field: str = "name") -> str:
    """``value`` unchanged when every character is printable, else :class:`UnprintableText`."""
    for index, char in enumerate(value):
        if not is_printable(char):
            raise UnprintableText(field, index, char)
    return value


def require_printable(field: str, value: object) -> None:
    """The service layer's form of :func:`check_printable`: a 400 ``invalid_request``."""
    if not isinstance(value, str):  # None, or a type the caller's own checks refuse
        return
    try:
        check_printable(value, field)
    except UnprintableText as exc:
        raise InvalidRequest(
            str(exc), field=field, position=exc.index, character=f"U+{ord(exc.char):04X}"
        ) from exc


def check_server_name(name: object) -> str:
    """A server's name as create and rename accept it: 1-255 printable characters, not
    only spaces; InvalidRequest naming the value otherwise."""
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        shown = quoted(name) if isinstance(name, str) else repr(name)
        raise InvalidRequest(f"server name {shown} must be 1-255 characters", name=name)
    require_printable("server name", name)
    return name


def visible(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` safe to echo back: refused characters as ``\\uXXXX``, cut after ``limit``."""
    return shown(text, limit, quote=False)


def quoted(value: str, limit: int = ECHO_LIMIT) -> str:
    """``value`` as an error message names it: quoted and cut after ``limit`` characters,
    since ids and names from a URL path reach the service unchecked and may be kilobytes
    long."""
    return shown(value, limit)


def _pydantic_check(value: str, info: ValidationInfo) -> str:
    return check_printable(value, info.field_name or "name")


PrintableText = Annotated[str, AfterValidator(_pydantic_check)]
"""A string field of the API whose characters must all be printable (422 otherwise)."""
