"""The in-memory provider index always equals a fresh load from the database, whoever
wrote, and its candidate answers equal a brute-force check of Placement's rules."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest

from wattvisor.placement import (
    CandidateRequest,
    Inventory,
    Placement,
    PlacementError,
    TraitQuery,
)
from wattvisor.placement.index import ProviderIndex, ProviderState
from wattvisor.store import make_engine

TRAITS = ["HW_ARCH_X86_64", "COMPUTE_SHARE_LOCAL_FS", "COMPUTE_NET_VIF_MODEL_E1000"]
STEPS = 150


def _snapshot(index: ProviderIndex) -> dict[str, tuple[object, ...]]:
    return {
        s.uuid: (s.name, s.generation, s.traits, s.inventories, s.usages)
        for s in index.providers.values()
    }


def _brute_force(states: list[ProviderState], request: CandidateRequest) -> set[str]:
    out = set()
    for s in states:
        if not request.traits.required <= s.traits or request.traits.forbidden & s.traits:
            continue
        if any(not (group & s.traits) for group in request.traits.any_of):
            continue
        if all(
            rc in s.inventories and s.inventories[rc].admits(s.usages.get(rc, 0), amount)
            for rc, amount in request.resources.items()
        ):
            out.add(s.uuid)
    return out


@pytest.fixture
def two_writers(store_url: str) -> Iterator[tuple[Placement, Placement, str]]:
    engines = [make_engine(store_url), make_engine(store_url)]
    try:
        yield Placement(engines[0]), Placement(engines[1]), store_url
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize("seed", [1, 2])
def test_index_matches_database_after_random_writes_from_two_services(
    two_writers: tuple[Placement, Placement, str], seed: int
) -> None:
    first, second, url = two_writers
    fresh_engine = make_engine(url)
    rng = random.Random(seed)
    consumers: dict[str, int] = {}
    providers: list[str] = []
    for step in range(STEPS):
        writer = rng.choice((first, second))
        action = rng.random()
        try:
            if action < 0.15 or not providers:
                rp = str(uuid.uuid4())
                writer.create_provider(f"p{step}", rp)
                providers.append(rp)
            elif action < 0.35:
                rp = rng.choice(providers)
                generation = writer.get_provider(rp).generation
                writer.set_inventories(
                    rp,
                    generation,
                    {
                        "VCPU": Inventory(
                            total=rng.randint(1, 8),
                            reserved=rng.randint(0, 1),
                            allocation_ratio=rng.choice((1.0, 1.5, 2.0)),
                            step_size=rng.choice((1, 1, 2)),
                        ),
                        "MEMORY_MB": Inventory(total=rng.randint(512, 4096)),
                    },
                )
            elif action < 0.5:
                rp = rng.choice(providers)
                generation = writer.get_provider(rp).generation
                writer.set_provider_traits(
                    rp, generation, rng.sample(TRAITS, rng.randint(0, len(TRAITS)))
                )
            elif action < 0.8:
                consumer = str(uuid.uuid4())
                generation = writer.set_allocations(
                    consumer,
                    {rng.choice(providers): {"VCPU": rng.randint(1, 3)}},
                    project_id="p",
                    user_id="u",
                    consumer_generation=None,
                )
                assert generation is not None
                consumers[consumer] = generation
            elif action < 0.86 and consumers:
                consumer = rng.choice(sorted(consumers))
                generation = writer.set_allocations(
                    consumer,
                    {rng.choice(providers): {"VCPU": rng.randint(1, 2)}},
                    project_id="p",
                    user_id="u",
                    consumer_generation=consumers[consumer],
                )
                assert generation is not None
                consumers[consumer] = generation
            elif action < 0.92 and consumers:
                consumer = rng.choice(sorted(consumers))
                writer.delete_allocations(consumer)
                del consumers[consumer]
            else:
                writer.delete_provider(rng.choice(providers))
        except PlacementError:
            pass
        reader = rng.choice((first, second))
        reader.refresh()
        fresh = ProviderIndex(fresh_engine)
        fresh.refresh()
        assert _snapshot(reader.index) == _snapshot(fresh)
        request = CandidateRequest(
            {"VCPU": rng.randint(1, 4)},
            TraitQuery(
                required=frozenset(rng.sample(TRAITS, rng.randint(0, 1))),
                forbidden=frozenset(rng.sample(TRAITS, rng.randint(0, 1))),
                any_of=(frozenset(rng.sample(TRAITS, 2)),) if rng.random() < 0.3 else (),
            ),
        )
        if request.traits.required & request.traits.forbidden:
            continue
        got = {c.provider_uuid for c in reader.allocation_candidates(request).candidates}
        assert got == _brute_force(list(fresh.providers.values()), request)
    fresh_engine.dispose()
