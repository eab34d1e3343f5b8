"""Tables of the fleet's energy history, kept by the controllers.

Agents push samples; ``energy_host_samples`` holds one row per host sample (the key
``(host_uuid, ts_ms)`` makes a re-sent sample change nothing) and
``energy_server_samples`` one row per server in it, with the server's project as the
controller knew it. After ``history.raw_retention_s`` samples are rolled up into
``energy_host_rollups``/``energy_server_rollups`` (one row per bucket): averages of
power, sums of the interval joules (so energy is conserved) and the last counter.
Only :mod:`wattvisor.compute.energy_history` reads and writes them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from wattvisor.store.models import Base


class EnergyHostSampleRow(Base):
    """One sample of a host's meter: power over the interval ending at ``ts_ms``."""

    __tablename__ = "energy_host_samples"

    host_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    interval_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    power_watts: Mapped[float] = mapped_column(Float, nullable=False)
    joules: Mapped[float] = mapped_column(Float, nullable=False)
    energy_joules_total: Mapped[float] = mapped_column(Float, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    measured: Mapped[bool] = mapped_column(Boolean, nullable=False)

    __table_args__ = (Index("ix_energy_host_samples_ts", "ts_ms"),)


class EnergyServerSampleRow(Base):
    """One server in one host sample; ``joules`` is its energy over that interval."""

    __tablename__ = "energy_server_samples"

    host_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    server_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    power_watts: Mapped[float] = mapped_column(Float, nullable=False)
    joules: Mapped[float] = mapped_column(Float, nullable=False)
    energy_joules_total: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (
        Index("ix_energy_server_samples_server", "server_uuid", "ts_ms"),
        Index("ix_energy_server_samples_project", "project", "ts_ms"),
        Index("ix_energy_server_samples_ts", "ts_ms"),
    )


class EnergyHostRollupRow(Base):
    """A host's samples of one bucket starting at ``bucket_ms``, rolled up."""

    __tablename__ = "energy_host_rollups"

    host_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    samples: Mapped[int] = mapped_column(Integer, nullable=False)
    interval_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    power_watts: Mapped[float] = mapped_column(Float, nullable=False)
    joules: Mapped[float] = mapped_column(Float, nullable=False)
    energy_joules_total: Mapped[float] = mapped_column(Float, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    measured: Mapped[bool] = mapped_column(Boolean, nullable=False)

    __table_args__ = (Index("ix_energy_host_rollups_bucket", "bucket_ms"),)


class EnergyServerRollupRow(Base):
    """One server's samples of one bucket on one host, rolled up."""

    __tablename__ = "energy_server_rollups"

    host_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    server_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    samples: Mapped[int] = mapped_column(Integer, nullable=False)
    power_watts: Mapped[float] = mapped_column(Float, nullable=False)
    joules: Mapped[float] = mapped_column(Float, nullable=False)
    energy_joules_total: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (
        Index("ix_energy_server_rollups_server", "server_uuid", "bucket_ms"),
        Index("ix_energy_server_rollups_project", "project", "bucket_ms"),
        Index("ix_energy_server_rollups_bucket", "bucket_ms"),
    )
