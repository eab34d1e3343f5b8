"""Prefilters: small functions that turn a request's flavor and image into placement
constraints before candidates are fetched.

Each is registered once in ``PREFILTERS`` with the setting that switches it, and returns
one line per trait it added, saying why ("required COMPUTE_SHARE_LOCAL_FS because flavor
extra spec hw:power_metrics=true"). Adding a prefilter means adding one function here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from wattvisor.config.settings import SchedulerSettings
from wattvisor.placement.names import standard_traits
from wattvisor.scheduler.request_spec import RequestSpec
from wattvisor.scheduler.validation import (
    POWER_METRICS_FLAVOR_KEY,
    POWER_METRICS_IMAGE_KEY,
    TRAIT_PROPERTIES,
    TRAIT_SPEC_PREFIX,
    InvalidSpec,
    Problem,
    accepted_values,
    canonical_value,
    grouped_specs,
    image_property,
    parse_bool,
    request_problems,
)
from wattvisor.scheduler.validation import (
    SHARE_TRAIT as SHARE_TRAIT,
)

LOG = logging.getLogger(__name__)

PrefilterFunction = Callable[[RequestSpec], list[str]]


@dataclass(frozen=True, slots=True)
class Prefilter:
    name: str
    setting: str
    function: PrefilterFunction

    def enabled(self, settings: SchedulerSettings) -> bool:
        return bool(getattr(settings, self.setting))


PREFILTERS: list[Prefilter] = []


def prefilter(setting: str) -> Callable[[PrefilterFunction], PrefilterFunction]:
    """Register a prefilter switched by ``SchedulerSettings.<setting>``."""

    def register(function: PrefilterFunction) -> PrefilterFunction:
        PREFILTERS.append(Prefilter(function.__name__, setting, function))
        return function

    return register


@prefilter("image_metadata_prefilter")
def image_metadata(spec: RequestSpec) -> list[str]:
    """Image properties naming a device model, bus, architecture, hypervisor or VM mode
    require the host trait for it. Unlike Nova, a value without a trait is an error, not
    silently ignored."""
    log = []
    for key, prop in TRAIT_PROPERTIES.items():
        raw = spec.image.properties.get(key)
        if raw is None:
            continue
        value = canonical_value(key, str(raw))
        trait = prop.trait_for(value) if value is not None else None
        if trait is None or not (prop.custom or trait in standard_traits()):
            raise InvalidSpec([Problem("image property", key, str(raw), accepted_values(key))])
        reason = f"image property {key}={raw}"
        spec.require(trait, reason)
        log.append(f"required {trait} because {reason}")
    return log


@prefilter("power_metrics_prefilter")
def power_metrics(spec: RequestSpec) -> list[str]:
    """A VM that asks for power metrics needs a host that can share its energy counter
    directory read-only, i.e. one with COMPUTE_SHARE_LOCAL_FS."""
    flavor_raw = spec.flavor.extra_specs.get(POWER_METRICS_FLAVOR_KEY)
    found = image_property(spec.image.properties, POWER_METRICS_IMAGE_KEY)
    image_key, image_raw = found if found is not None else (POWER_METRICS_IMAGE_KEY, None)
    flavor_value = parse_bool(flavor_raw) if flavor_raw is not None else None
    image_value = parse_bool(image_raw) if image_raw is not None else None
    problems: list[Problem | str] = []
    if flavor_raw is not None and flavor_value is None:
        problems.append(
            Problem("flavor extra spec", POWER_METRICS_FLAVOR_KEY, flavor_raw, ("true", "false"))
        )
    if image_raw is not None and image_value is None:
        problems.append(Problem("image property", image_key, image_raw, ("true", "false")))
    if flavor_value is not None and image_value is not None and flavor_value != image_value:
        problems.append(
            f"flavor extra spec {POWER_METRICS_FLAVOR_KEY}={flavor_raw} and image property "
            f"{image_key}={image_raw} disagree; set one of them, or both alike"
        )
    if problems:
        raise InvalidSpec(problems)
    if flavor_value:
        reason = f"flavor extra spec {POWER_METRICS_FLAVOR_KEY}={flavor_raw}"
    elif image_value:
        reason = f"image property {image_key}={image_raw}"
    else:
        return []
    spec.require(SHARE_TRAIT, reason)
    return [f"required {SHARE_TRAIT} because {reason}"]


@prefilter("explicit_traits_prefilter")
def explicit_traits(spec: RequestSpec) -> list[str]:
    """``trait[N]:NAME=required|forbidden`` in flavor extra specs and ``trait:NAME`` in
    image properties. A numbered group's traits apply to the host like the unnumbered
    ones: every wattvisor host is a single resource provider."""
    wanted: list[tuple[str, str, str, str]] = []  # source, key, trait, value
    for flavor_spec in grouped_specs(spec.flavor.extra_specs):
        if flavor_spec.kind == "trait":
            wanted.append(
                ("flavor extra spec", flavor_spec.key, flavor_spec.name, flavor_spec.value)
            )
    for key, raw in sorted(spec.image.properties.items()):
        if key.startswith(TRAIT_SPEC_PREFIX):
            wanted.append(("image property", key, key[len(TRAIT_SPEC_PREFIX) :], str(raw)))
    log = []
    for source, key, trait, raw in wanted:
        value = raw.strip().lower()
        reason = f"{source} {key}={raw}"
        if value == "required":
            spec.require(trait, reason)
            log.append(f"required {trait} because {reason}")
        elif value == "forbidden":
            spec.forbid(trait, reason)
            log.append(f"forbade {trait} because {reason}")
        else:
            raise InvalidSpec([Problem(source, key, raw, ("required", "forbidden"))])
    return log


DISABLED_TRAIT = "COMPUTE_STATUS_DISABLED"


@prefilter("disabled_hosts_prefilter")
def disabled_hosts(spec: RequestSpec) -> list[str]:
    """An operator disables a host by giving it COMPUTE_STATUS_DISABLED (as Nova does);
    new servers must not land there, while the servers already on it keep running."""
    reason = "the disabled-hosts prefilter (an operator disabled the host)"
    spec.forbid(DISABLED_TRAIT, reason)
    return [f"forbade {DISABLED_TRAIT} because new servers avoid disabled hosts"]


def run_prefilters(spec: RequestSpec, settings: SchedulerSettings) -> RequestSpec:
    """Apply every enabled prefilter to ``spec`` (in place) and return it.

    First, whatever prefilters are on, the image properties are checked with the
    flavor: an image saved before a rule existed, or a flavor and image that contradict
    each other, is refused here rather than giving a guest without what was asked.
    """
    problems = request_problems(spec.flavor.extra_specs, spec.image.properties)
    if problems:
        raise InvalidSpec(problems)
    for item in PREFILTERS:
        if not item.enabled(settings):
            continue
        for line in item.function(spec):
            LOG.debug("prefilter %s: %s", item.name, line)
            spec.log.append(f"{item.name}: {line}")
    return spec
