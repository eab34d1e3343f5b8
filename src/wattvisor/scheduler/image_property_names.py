"""Which ``hw_*`` image property names exist, which wattvisor applies, and their synonyms.

The single list of names: validation refuses a ``hw_*`` key that is not applied, so an
image never carries a property that looks honoured but shapes nothing. A name Nova
knows but wattvisor does not apply is refused as such; any other ``hw_*`` name is a
typo, answered with the nearest known name.
"""

from __future__ import annotations

import difflib

HW_PREFIX = "hw_"

# Nova's ImageMetaProps fields with the hw_ prefix (nova/objects/image_meta.py, 1.42).
NOVA_HW_PROPERTIES: frozenset[str] = frozenset(
    {
        "hw_architecture", "hw_emulation_architecture", "hw_auto_disk_config",
        "hw_boot_menu", "hw_cdrom_bus", "hw_cpu_cores", "hw_cpu_sockets",
        "hw_cpu_max_cores", "hw_cpu_max_sockets", "hw_cpu_max_threads", "hw_cpu_policy",
        "hw_cpu_thread_policy", "hw_cpu_realtime_mask", "hw_cpu_threads", "hw_device_id",
        "hw_disk_bus", "hw_disk_type", "hw_floppy_bus", "hw_firmware_type",
        "hw_firmware_stateless", "hw_input_bus", "hw_ipxe_boot", "hw_locked_memory",
        "hw_machine_type", "hw_mem_encryption", "hw_mem_encryption_model",
        "hw_mem_page_size", "hw_numa_nodes", "hw_numa_cpus", "hw_numa_mem",
        "hw_pci_numa_affinity_policy", "hw_pointer_model", "hw_pmu", "hw_qemu_guest_agent",
        "hw_rescue_bus", "hw_rescue_device", "hw_rng_model", "hw_time_hpet",
        "hw_serial_port_count", "hw_scsi_model", "hw_video_model", "hw_video_ram",
        "hw_vif_model", "hw_viommu_model", "hw_vm_mode", "hw_watchdog_action",
        "hw_vif_multiqueue_enabled", "hw_tpm_model", "hw_tpm_version",
        "hw_ephemeral_encryption", "hw_ephemeral_encryption_format",
        "hw_ephemeral_encryption_secret_uuid", "hw_virtio_packed_ring",
        "hw_maxphysaddr_mode", "hw_maxphysaddr_bits", "hw_sound_model", "hw_usb_model",
        "hw_redirected_usb_ports",
    }
)  # fmt: skip

POWER_METRICS_IMAGE_KEY = "hw_power_metrics"

# Service properties: not hw_ names, read by the same name from a flavor extra spec, an
# image property or the server's own metadata (compute.prometheus_targets).
PROMETHEUS_EXPORTER_PORT_KEY = "prometheus_exporter_port"
"""The TCP port of an exporter the guest serves; the server becomes a Prometheus target."""
SERVICE_TEMPLATE_KEY = "service_template"
"""The id of the service template the server was deployed from (COGNIT's FLAVOURS)."""
EXPORTER_PORT_RANGE = (1, 65535)
SERVICE_TEMPLATE_RANGE = (0, 2**31 - 1)

# The hw_ properties wattvisor applies to a guest (compute/image_properties.py), plus
# its own hw_power_metrics. Every other hw_ key is refused.
APPLIED_HW_PROPERTIES: frozenset[str] = frozenset(
    {
        "hw_architecture", "hw_cdrom_bus", "hw_disk_bus", "hw_firmware_type",
        "hw_machine_type", "hw_pointer_model", "hw_qemu_guest_agent", "hw_rng_model",
        "hw_scsi_model", "hw_video_model", "hw_vif_model", POWER_METRICS_IMAGE_KEY,
    }
)  # fmt: skip

# Other spellings accepted for an applied property: synonym -> the property it means.
HW_SYNONYMS: dict[str, str] = {"hw_powermetrics": POWER_METRICS_IMAGE_KEY}

KNOWN_HW_PROPERTIES: frozenset[str] = (
    NOVA_HW_PROPERTIES | APPLIED_HW_PROPERTIES | frozenset(HW_SYNONYMS)
)


def canonical_property_name(key: str) -> str:
    """The property ``key`` stands for (a synonym gives its canonical name)."""
    return HW_SYNONYMS.get(key, key)


def nearest_known_name(key: str) -> str | None:
    """The known ``hw_*`` name closest to ``key`` (a likely typo), or None."""
    found = difflib.get_close_matches(key.lower(), sorted(KNOWN_HW_PROPERTIES), n=1, cutoff=0.6)
    return found[0] if found else None
