"""Tables of the fleet's energy history, kept by the controllers.

Agents push samples; ``energy_host_samples`` holds one row per host sample (the key
``(host_uuid, ts_ms)`` makes a re-sent sample change nothing) and
``energy_server_samples`` one row per server in it, with the server's project as the
controller knew it. After ``history.raw_retention_s`` samples are rolled up into
``energy_host_rollups``/``energy_server_rollups`` (one row per bucket): averages of
power, sums of the interval joules (so energy is conserved) and the last counter.
Only :mod:`wattvisor.compute.energy_history` reads and writes them. The four share
most of their columns, so one factory declares them (migration 0010 keeps its own
frozen copy, as every migration does).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table

from wattvisor.store.models import Base


def _energy_table(name: str, *, per_server: bool, rollup: bool) -> Table:
    """One of the four tables: a host's or its servers' rows, samples (keyed by the
    sample's ``ts_ms``) or rollups (by ``bucket_ms``, with how many samples each holds).

    Server rows carry their project; host rows the interval, the meter's source and
    whether it measured (a rollup's interval is the sum of its samples': 64 bits)."""
    time_column = "bucket_ms" if rollup else "ts_ms"
    columns: list[Column[Any]] = [
        Column("host_uuid", String(36), primary_key=True),
        Column(time_column, BigInteger, primary_key=True),
    ]
    if per_server:
        columns += [
            Column("server_uuid", String(36), primary_key=True),
            Column("project", String(255), nullable=False),
        ]
    if rollup:
        columns.append(Column("samples", Integer, nullable=False))
    if not per_server:
        columns.append(Column("interval_ms", BigInteger if rollup else Integer, nullable=False))
    columns += [
        Column("power_watts", Float, nullable=False),
        Column("joules", Float, nullable=False),
        Column("energy_joules_total", Float, nullable=False),
    ]
    if not per_server:
        columns += [
            Column("source", String(16), nullable=False),
            Column("measured", Boolean, nullable=False),
        ]
    suffix = "bucket" if rollup else "ts"
    indexes = [Index(f"ix_{name}_{suffix}", time_column)]
    if per_server:
        indexes = [
            Index(f"ix_{name}_server", "server_uuid", time_column),
            Index(f"ix_{name}_project", "project", time_column),
            *indexes,
        ]
    return Table(name, Base.metadata, *columns, *indexes)


class EnergyHostSampleRow(Base):
    """One sample of a host's meter: power over the interval ending at ``ts_ms``."""

    __table__ = _energy_table("energy_host_samples", per_server=False, rollup=False)


class EnergyServerSampleRow(Base):
    """One server in one host sample; ``joules`` is its energy over that interval."""

    __table__ = _energy_table("energy_server_samples", per_server=True, rollup=False)


class EnergyHostRollupRow(Base):
    """A host's samples of one bucket starting at ``bucket_ms``, rolled up."""

    __table__ = _energy_table("energy_host_rollups", per_server=False, rollup=True)


class EnergyServerRollupRow(Base):
    """One server's samples of one bucket on one host, rolled up."""

    __table__ = _energy_table("energy_server_rollups", per_server=True, rollup=True)


class EnergyProjectSampleRow(Base):
    """A project's energy in one host sample: its servers' ``joules`` summed at write time.

    Kept beside ``energy_server_samples`` (and removed with them) so that a project's
    history over a day reads one row per host sample instead of one per server."""

    __table__ = Table(
        "energy_project_samples",
        Base.metadata,
        Column("project", String(255), primary_key=True),
        Column("ts_ms", BigInteger, primary_key=True),
        Column("host_uuid", String(36), primary_key=True),
        Column("joules", Float, nullable=False),
    )


class EnergyServerCounterRow(Base):
    """Each server's highest counter on each host it pushed from, raised at write time.

    A server's energy total is its highest counter over its hosts (a migrated server's
    counter continues from its source's total), so a project's total reads one row per
    server and host here instead of every sample it ever had. Not removed by
    downsampling or the row cap: capping history never lowers a total."""

    __table__ = Table(
        "energy_server_counters",
        Base.metadata,
        Column("server_uuid", String(36), primary_key=True),
        Column("host_uuid", String(36), primary_key=True),
        Column("project", String(255), nullable=False),
        Column("energy_joules_total", Float, nullable=False),
        Column("ts_ms", BigInteger, nullable=False),
        Index("ix_energy_server_counters_project", "project"),
    )
