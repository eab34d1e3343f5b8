"""The durable work queue: one row per piece of work a controller must do.

Only :mod:`wattvisor.compute.tasks` reads and writes it; it hands dataclasses, never
rows, to the rest of the system.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from wattvisor.store.models import Base

IN_FLIGHT = ("queued", "running")
"""States of a task that is not settled yet; the rest (``done``, ``failed``) never change."""
IN_FLIGHT_SQL = "state IN ('queued', 'running')"
CLAIMABLE_SQL = "state = 'queued' AND ready"
"""Spelled exactly as the claim's index predicate, so the planner always matches them."""
RUNNING_SQL = "state = 'running'"


class TaskRow(Base):
    """A task: queued until a worker claims it, running while the worker's lease lasts.

    ``attempts`` counts claims, so ``(id, attempts)`` names one claim: a worker whose
    lease ran out and was taken over can no longer complete, fail or renew the task.
    """

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    target: Mapped[str] = mapped_column(String(64), nullable=False)
    """What the task works on (a server's uuid); one target's tasks run one at a time."""
    idempotency_key: Mapped[str] = mapped_column(String(128), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    ready: Mapped[bool] = mapped_column(Boolean, nullable=False)
    """True for the oldest unsettled task of its target, the only one that may be claimed;
    set when the task before it settles."""
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        # A repeated request finds the task already in flight instead of queuing another.
        Index(
            "uq_tasks_in_flight_key",
            "kind",
            "target",
            "idempotency_key",
            unique=True,
            postgresql_where=text(IN_FLIGHT_SQL),
            sqlite_where=text(IN_FLIGHT_SQL),
        ),
        # The claim scans the claimable tasks in order and stops at its limit.
        Index(
            "ix_tasks_claimable",
            "run_after",
            "id",
            postgresql_where=text(CLAIMABLE_SQL),
            sqlite_where=text(CLAIMABLE_SQL),
        ),
        # The next task of a target, once the one before settles.
        Index(
            "ix_tasks_in_flight_target",
            "target",
            "id",
            postgresql_where=text(IN_FLIGHT_SQL),
            sqlite_where=text(IN_FLIGHT_SQL),
        ),
        Index(
            "ix_tasks_running_lease",
            "lease_expires_at",
            postgresql_where=text(RUNNING_SQL),
            sqlite_where=text(RUNNING_SQL),
        ),
    )
