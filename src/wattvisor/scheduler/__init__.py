"""The scheduler: request specs from flavor + image, validation of their properties,
prefilters, weighers, and select + claim with retries."""

from wattvisor.scheduler.prefilters import PREFILTERS, Prefilter, prefilter, run_prefilters
from wattvisor.scheduler.request_spec import (
    Flavor,
    ImageMeta,
    RequestSpec,
    build_request_spec,
    flavor_resources,
)
from wattvisor.scheduler.scheduler import Claim, NoValidHost, Scheduler, SpawnFailed
from wattvisor.scheduler.validation import (
    InvalidSpec,
    Problem,
    accepted_values,
    flavor_problems,
    image_problems,
    validate_flavor_extra_specs,
    validate_image_properties,
)
from wattvisor.scheduler.weighers import (
    WEIGHERS,
    HostPowerSource,
    HostPowerTable,
    WeighContext,
    Weigher,
    weigher,
)

__all__ = [
    "PREFILTERS",
    "WEIGHERS",
    "Claim",
    "Flavor",
    "HostPowerSource",
    "HostPowerTable",
    "ImageMeta",
    "InvalidSpec",
    "NoValidHost",
    "Prefilter",
    "Problem",
    "RequestSpec",
    "Scheduler",
    "SpawnFailed",
    "WeighContext",
    "Weigher",
    "accepted_values",
    "build_request_spec",
    "flavor_problems",
    "flavor_resources",
    "image_problems",
    "prefilter",
    "run_prefilters",
    "validate_flavor_extra_specs",
    "validate_image_properties",
    "weigher",
]
