"""Tables of the controller's state.

Resource classes and traits are stored by name: the standard ones come from
os-resource-classes and os-traits and are not stored at all, the custom ones
(``CUSTOM_*``) live in their own tables so that a name must be created before use,
as in OpenStack Placement.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every wattvisor table (Alembic compares against its metadata)."""


class PlacementSequence(Base):
    """One row counting placement writes.

    Every write takes this row's lock first and stamps the providers it changes with
    the new value, so writers are serialised and a reader learns which providers
    changed since it last looked with one indexed query.
    """

    __tablename__ = "placement_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ResourceProvider(Base):
    __tablename__ = "resource_providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    parent_provider_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_resource_providers_updated_seq", "updated_seq"),
        Index("ix_resource_providers_parent", "parent_provider_id"),
    )


class ProviderAggregate(Base):
    """A provider's membership of one aggregate (Placement aggregates are bare uuids)."""

    __tablename__ = "resource_provider_aggregates"

    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("resource_providers.id", ondelete="CASCADE"), primary_key=True
    )
    aggregate_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)

    __table_args__ = (Index("ix_resource_provider_aggregates_aggregate", "aggregate_uuid"),)


class ResourceProviderDeletion(Base):
    """Tombstone of a deleted provider, so that caches of provider state can drop it."""

    __tablename__ = "resource_provider_deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider_id: Mapped[int] = mapped_column(Integer, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (Index("ix_resource_provider_deletions_seq", "seq"),)


class CustomResourceClass(Base):
    __tablename__ = "custom_resource_classes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)


class CustomTrait(Base):
    __tablename__ = "custom_traits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)


class Inventory(Base):
    __tablename__ = "inventories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("resource_providers.id", ondelete="CASCADE"), nullable=False
    )
    resource_class: Mapped[str] = mapped_column(String(255), nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    reserved: Mapped[int] = mapped_column(Integer, nullable=False)
    min_unit: Mapped[int] = mapped_column(Integer, nullable=False)
    max_unit: Mapped[int] = mapped_column(Integer, nullable=False)
    step_size: Mapped[int] = mapped_column(Integer, nullable=False)
    allocation_ratio: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (
        UniqueConstraint("resource_provider_id", "resource_class", name="uq_inventories_rp_rc"),
    )


class ProviderTrait(Base):
    __tablename__ = "resource_provider_traits"

    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("resource_providers.id", ondelete="CASCADE"), primary_key=True
    )
    trait: Mapped[str] = mapped_column(String(255), primary_key=True)

    __table_args__ = (Index("ix_resource_provider_traits_trait", "trait"),)


class Consumer(Base):
    __tablename__ = "consumers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    project_id: Mapped[str] = mapped_column(String(255), nullable=False)
    user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    consumer_type: Mapped[str] = mapped_column(String(255), nullable=False)
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Allocation(Base):
    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("resource_providers.id", ondelete="RESTRICT"), nullable=False
    )
    consumer_id: Mapped[int] = mapped_column(
        ForeignKey("consumers.id", ondelete="CASCADE"), nullable=False
    )
    resource_class: Mapped[str] = mapped_column(String(255), nullable=False)
    used: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        Index("ix_allocations_rp_rc", "resource_provider_id", "resource_class"),
        Index("ix_allocations_consumer_id", "consumer_id"),
    )
