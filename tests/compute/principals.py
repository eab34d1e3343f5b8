"""The principals the compute tests act as: two members of different projects and an admin."""

from __future__ import annotations

from wattvisor.auth import Principal

ALICE = Principal("alice", "proj-a", "member")
BOB = Principal("bob", "proj-b", "member")
ADMIN = Principal("root", "admin", "admin")
