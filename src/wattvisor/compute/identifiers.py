"""What identifiers chosen by people may contain: flavor ids and project ids.

Both travel where nothing may need escaping: URL paths (``/v1/flavors/{id}``,
``/v1/projects/{id}/power``), file and Prometheus label values, the guest's metadata and
log lines. So they are short runs of letters, digits and a few punctuation marks,
starting with a letter or digit: no ``/``, ``..``, spaces, newlines or other control
characters.
"""

from __future__ import annotations

import re

from wattvisor.compute.errors import InvalidRequest
from wattvisor.shown_values import shown

FLAVOR_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,35}")
FLAVOR_ID_RULE = "1-36 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
PROJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
PROJECT_ID_RULE = "1-64 characters from A-Z a-z 0-9 . _ @ -, starting with a letter or digit"


def _shown(value: object) -> str:
    return shown(value, 80)


def check_flavor_id(value: str) -> str:
    """``value`` unchanged if it may be a flavor id, else InvalidRequest with the rule."""
    if not isinstance(value, str) or not FLAVOR_ID_PATTERN.fullmatch(value):
        raise InvalidRequest(
            f"flavor id {_shown(value)} is not accepted; use {FLAVOR_ID_RULE}",
            field="id", accepted=FLAVOR_ID_RULE,
        )  # fmt: skip
    return value


def check_project_id(value: str) -> str:
    """``value`` unchanged if it may be a project id, else InvalidRequest with the rule."""
    if not isinstance(value, str) or not PROJECT_ID_PATTERN.fullmatch(value):
        raise InvalidRequest(
            f"project {_shown(value)} is not accepted; use {PROJECT_ID_RULE}",
            field="project", accepted=PROJECT_ID_RULE,
        )  # fmt: skip
    return value
