"""libvirt bulk domain stats, against libvirt's built-in test hypervisor."""

from __future__ import annotations

import libvirt

from wattvisor.energy.domain_stats import LibvirtDomainCpuStats

INACTIVE_DOMAIN = """
<domain type='test'>
  <name>stopped-one</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <memory>65536</memory>
  <os><type>hvm</type></os>
</domain>
"""


def test_domains_are_listed_by_lowercase_uuid_with_state() -> None:
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(INACTIVE_DOMAIN)
        result = LibvirtDomainCpuStats(conn).domain_cpu()
    finally:
        conn.close()
    assert result is not None
    running = result["6695eb01-f6a4-8304-79aa-97f2502e193f"]
    assert (running.name, running.active) == ("test", True)
    # test:///default has no cpu.time: the sampler falls back to the QEMU process tree.
    assert running.cpu_ns is None
    stopped = result["11111111-2222-3333-4444-555555555555"]
    assert (stopped.name, stopped.active, stopped.cpu_ns) == ("stopped-one", False, None)


def test_unreachable_hypervisor_gives_none_not_an_exception() -> None:
    conn = libvirt.open("test:///default")
    stats = LibvirtDomainCpuStats(conn)
    conn.close()
    assert stats.domain_cpu() is None
