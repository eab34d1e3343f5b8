"""Guest images wattvisor builds itself: the tiny busybox guest used by tests and ``up``."""

from wattvisor.images.guest import (
    BASE_CMDLINE,
    GUEST_MODULES,
    GuestImage,
    GuestImageError,
    default_cache_dir,
    ensure_guest_image,
)

__all__ = [
    "BASE_CMDLINE",
    "GUEST_MODULES",
    "GuestImage",
    "GuestImageError",
    "default_cache_dir",
    "ensure_guest_image",
]
