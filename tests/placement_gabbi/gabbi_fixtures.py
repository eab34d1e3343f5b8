"""The fixture classes Placement's gabbi files name, made through our own HTTP API.

Each class sets the environment variables the files read, as Placement's own fixtures
do, and creates the same providers, inventories, traits, aggregates and allocations,
only by requests to the served ``/placement`` rather than by database calls.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
from gabbi import fixture

from placement_gabbi.gabbi_world import ServedPlacement

SERVED: ServedPlacement | None = None
"""The API the current gabbi file runs against (set by the test module)."""

SHARES = "MISC_SHARES_VIA_AGGREGATE"


def _new() -> str:
    return str(uuid.uuid4())


class _Builder:
    """Placement's test-data helpers (``create_provider``, ``add_inventory``, ...) over HTTP."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _ok(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise AssertionError(
                f"fixture request {response.request.method} {response.request.url} failed: "
                f"{response.status_code} {response.text}"
            )
        return response

    def _generation(self, rp: str) -> int:
        return int(self._ok(self.client.get(f"/resource_providers/{rp}")).json()["generation"])

    def create_provider(self, name: str, *aggs: str, parent: str | None = None,
                        rp_uuid: str | None = None) -> str:  # fmt: skip
        body: dict[str, Any] = {"name": name, "uuid": rp_uuid or _new()}
        if parent:
            body["parent_provider_uuid"] = parent
        rp = str(self._ok(self.client.post("/resource_providers", json=body)).json()["uuid"])
        if aggs:
            self.set_aggregates(rp, *aggs)
        return rp

    def set_aggregates(self, rp: str, *aggs: str) -> None:
        self._ok(
            self.client.put(
                f"/resource_providers/{rp}/aggregates",
                json={
                    "aggregates": list(aggs),
                    "resource_provider_generation": self._generation(rp),
                },
            )
        )

    def ensure_resource_class(self, name: str) -> None:
        if name.startswith("CUSTOM_"):
            self._ok(self.client.put(f"/resource_classes/{name}"))

    def add_inventory(self, rp: str, rc: str, total: int, **fields: Any) -> None:
        self.ensure_resource_class(rc)
        fields.setdefault("max_unit", total)
        body = {"resource_class": rc, "total": total, **fields}
        self._ok(self.client.post(f"/resource_providers/{rp}/inventories", json=body))

    def set_traits(self, rp: str, *traits: str) -> None:
        for trait in traits:
            if trait.startswith("CUSTOM_"):
                self._ok(self.client.put(f"/traits/{trait}"))
        self._ok(
            self.client.put(
                f"/resource_providers/{rp}/traits",
                json={"traits": list(traits), "resource_provider_generation": self._generation(rp)},
            )
        )

    def set_allocation(self, rp: str, consumer: str, used: dict[str, int], *,
                       project: str, user: str) -> None:  # fmt: skip
        body = {
            "allocations": {rp: {"resources": used}},
            "project_id": project,
            "user_id": user,
            "consumer_generation": None,
        }
        # Written without a consumer type (1.37), as Placement's fixtures write them:
        # from 1.38 such consumers are reported as ``unknown``.
        self._ok(self.client.put(f"/allocations/{consumer}", json=body,
                                 headers={"OpenStack-API-Version": "placement 1.37"}))  # fmt: skip


ENVIRONMENT_UUIDS = (
    "RP_UUID", "RP_NAME", "RP_UUID1", "RP_NAME1", "RP_UUID2", "RP_NAME2", "PROJECT_ID",
    "ADMIN_PROJECT_ID", "SERVICE_PROJECT_ID", "USER_ID", "PROJECT_ID_ALT", "USER_ID_ALT",
    "INSTANCE_UUID", "MIGRATION_UUID", "CONSUMER_UUID", "PARENT_PROVIDER_UUID",
    "ALT_PARENT_PROVIDER_UUID",
)  # fmt: skip


class APIFixture(fixture.GabbiFixture):  # type: ignore[misc]
    """The environment every Placement gabbi file reads; data fixtures add to it."""

    def start_fixture(self) -> None:
        for name in ENVIRONMENT_UUIDS:
            os.environ[name] = _new()
        os.environ["CUSTOM_RES_CLASS"] = "CUSTOM_IRON_NFV"
        os.environ["CUSTOM_RES_CLASS1"] = "CUSTOM_IRON_NFV1"
        os.environ["CUSTOM_RES_CLASS2"] = "CUSTOM_IRON_NFV2"
        assert SERVED is not None, "no served API to create fixture data in"
        self._client = SERVED.client()
        self.tb = _Builder(self._client)
        self.make_data()

    def make_data(self) -> None:
        """Create the fixture's providers and allocations (none for the plain fixture)."""

    def stop_fixture(self) -> None:
        self._client.close()


class OpenPolicyFixture(APIFixture):
    """Placement opens every policy to non-admins here; our API stays admin-only."""


class LegacyRBACPolicyFixture(APIFixture):
    pass


class SecureRBACPolicyFixture(APIFixture):
    pass


class CORSFixture(APIFixture):
    pass


class AllocationFixture(APIFixture):
    def make_data(self) -> None:
        tb = self.tb
        os.environ["ALT_USER_ID"] = _new()
        project, user, alt_user = (
            os.environ["PROJECT_ID"], os.environ["USER_ID"], os.environ["ALT_USER_ID"],
        )  # fmt: skip
        rp = tb.create_provider(os.environ["RP_NAME"], rp_uuid=os.environ["RP_UUID"])
        tb.add_inventory(rp, "DISK_GB", 2048, step_size=10, min_unit=10, max_unit=1000)
        tb.add_inventory(rp, "VCPU", 10, max_unit=10)
        consumer1, consumer2, alt_consumer = _new(), _new(), _new()
        tb.set_allocation(rp, consumer1, {"DISK_GB": 1000}, project=project, user=user)
        os.environ["CONSUMER_0"] = consumer1
        tb.set_allocation(rp, consumer2, {"VCPU": 6}, project=project, user=user)
        os.environ["CONSUMER_ID"] = consumer2
        os.environ["ALT_CONSUMER_ID"] = alt_consumer
        tb.set_allocation(
            rp, alt_consumer, {"DISK_GB": 20, "VCPU": 1}, project=project, user=alt_user
        )
        os.environ["ALT_RP_UUID"] = _new()
        os.environ["ALT_RP_NAME"] = _new()


class SharedStorageFixture(APIFixture):
    def make_data(self) -> None:
        tb = self.tb
        agg = _new()
        os.environ["AGG_UUID"] = agg
        cn1, cn2 = tb.create_provider("cn1", agg), tb.create_provider("cn2", agg)
        ss, ss2 = tb.create_provider("ss", agg), tb.create_provider("ss2", agg)
        uuids = {"CN1": cn1, "CN2": cn2, "SS": ss, "SS2": ss2}
        for i, cn in ((1, cn1), (2, cn2)):
            for j in (1, 2):
                numa = tb.create_provider(f"numa{i}_{j}", parent=cn)
                pf = tb.create_provider(f"pf{i}_{j}", parent=numa)
                uuids[f"NUMA{i}_{j}"] = numa
                uuids[f"PF{i}_{j}"] = pf
                tb.add_inventory(pf, "SRIOV_NET_VF", 8, allocation_ratio=1.0)
        for key, value in uuids.items():
            os.environ[f"{key}_UUID"] = value
        for cn in (cn1, cn2):
            tb.add_inventory(cn, "VCPU", 24, allocation_ratio=16.0)
            tb.add_inventory(cn, "MEMORY_MB", 128 * 1024, allocation_ratio=1.5)
        tb.set_traits(cn1, "HW_CPU_X86_SSE", "HW_CPU_X86_SSE2")
        tb.add_inventory(cn2, "DISK_GB", 2000, reserved=100, allocation_ratio=1.0)
        for shared in (ss, ss2):
            tb.add_inventory(shared, "DISK_GB", 2000, reserved=100, allocation_ratio=1.0)
            tb.set_traits(shared, SHARES)


class NUMAAggregateFixture(APIFixture):
    def make_data(self) -> None:
        tb = self.tb
        agg_a, agg_b, agg_c = _new(), _new(), _new()
        os.environ.update(AGGA_UUID=agg_a, AGGB_UUID=agg_b, AGGC_UUID=agg_c)
        cn1 = tb.create_provider("cn1", agg_a)
        cn2 = tb.create_provider("cn2", agg_a, agg_b)
        ss1 = tb.create_provider("ss1", agg_a)
        ss2 = tb.create_provider("ss2", agg_c)
        numas = {
            "NUMA1_1": tb.create_provider("numa1_1", agg_c, parent=cn1),
            "NUMA1_2": tb.create_provider("numa1_2", parent=cn1),
            "NUMA2_1": tb.create_provider("numa2_1", parent=cn2),
            "NUMA2_2": tb.create_provider("numa2_2", parent=cn2),
        }
        for key, value in {"CN1": cn1, "CN2": cn2, "SS1": ss1, "SS2": ss2, **numas}.items():
            os.environ[f"{key}_UUID"] = value
        for numa in numas.values():
            tb.add_inventory(numa, "VCPU", 24, allocation_ratio=16.0)
        for ss in (ss1, ss2):
            tb.add_inventory(ss, "DISK_GB", 2000, reserved=100, allocation_ratio=1.0)
            tb.set_traits(ss, SHARES)


class NUMANetworkFixture(APIFixture):
    def make_data(self) -> None:
        self.make_entities(None, None)

    def make_entities(self, cn1: str | None, cn2: str | None) -> None:
        tb = self.tb
        agg_a = _new()
        os.environ["AGGA_UUID"] = agg_a
        ss1 = tb.create_provider("ss1", agg_a)
        tb.set_traits(ss1, SHARES)
        tb.add_inventory(ss1, "DISK_GB", 2000)
        os.environ["SS1_UUID"] = ss1
        cn1 = cn1 or tb.create_provider("cn1", agg_a)
        tb.set_aggregates(cn1, agg_a)
        tb.set_traits(cn1, "COMPUTE_VOLUME_MULTI_ATTACH")
        os.environ["CN1_UUID"] = cn1
        numas = []
        for i in (0, 1):
            numa = tb.create_provider(f"numa{i}", parent=cn1)
            tb.set_traits(numa, "HW_NUMA_ROOT", *(["CUSTOM_FOO"] if i == 1 else []))
            tb.add_inventory(numa, "VCPU", 4)
            numas.append(numa)
            os.environ[f"NUMA{i}_UUID"] = numa
        tb.add_inventory(numas[0], "MEMORY_MB", 2048, min_unit=512, step_size=256)
        tb.add_inventory(numas[1], "MEMORY_MB", 2048, min_unit=256, max_unit=1024)
        owner = {"project": "numafx-project", "user": "numafx-user"}
        tb.set_allocation(numas[0], _new(), {"VCPU": 2}, **owner)
        fpga = tb.create_provider("fpga0", parent=numas[0])
        tb.add_inventory(fpga, "FPGA", 1)
        os.environ["FPGA0_UUID"] = fpga
        pgpu = tb.create_provider("pgpu0", parent=numas[0])
        tb.add_inventory(pgpu, "VGPU", 8)
        os.environ["PGPU0_UUID"] = pgpu
        for i in (0, 1):
            fpga = tb.create_provider(f"fpga1_{i}", parent=numas[1])
            tb.add_inventory(fpga, "FPGA", 1)
            os.environ[f"FPGA1_{i}_UUID"] = fpga
        agent = tb.create_provider("sriov_agent", parent=cn1)
        tb.set_traits(agent, "CUSTOM_VNIC_TYPE_DIRECT")
        os.environ["SRIOV_AGENT_UUID"] = agent
        for i in (1, 2):
            dev = tb.create_provider(f"esn{i}", parent=agent)
            tb.set_traits(dev, f"CUSTOM_PHYSNET{i}")
            tb.add_inventory(dev, "NET_BW_EGR_KILOBIT_PER_SEC", 10000 * i)
            os.environ[f"ESN{i}_UUID"] = dev
        agent = tb.create_provider("ovs_agent", parent=cn1)
        tb.set_traits(agent, "CUSTOM_VNIC_TYPE_NORMAL")
        os.environ["OVS_AGENT_UUID"] = agent
        dev = tb.create_provider("br_int", parent=agent)
        tb.set_traits(dev, "CUSTOM_PHYSNET0")
        tb.add_inventory(dev, "NET_BW_EGR_KILOBIT_PER_SEC", 1000)
        os.environ["BR_INT_UUID"] = dev
        cn2 = cn2 or tb.create_provider("cn2")
        tb.set_aggregates(cn2, agg_a)
        tb.add_inventory(cn2, "VCPU", 8)
        tb.set_allocation(cn2, _new(), {"VCPU": 3}, **owner)
        tb.add_inventory(cn2, "MEMORY_MB", 2048, min_unit=1024, step_size=128)
        tb.add_inventory(cn2, "DISK_GB", 1000)
        tb.set_traits(cn2, "CUSTOM_FOO")
        os.environ["CN2_UUID"] = cn2
        nics = []
        for i in (1, 2, 3):
            nic = tb.create_provider(f"nic{i}", parent=cn2)
            tb.set_traits(nic, "CUSTOM_HW_NIC_ROOT")
            nics.append(nic)
            os.environ[f"NIC{i}_UUID"] = nic
        pfs = [(f"1_{i}", nics[0], i, 4) for i in (1, 2)]
        pfs += [(f"2_{i + 1}", nics[1], (i % 2) + 1, 2) for i in range(4)]
        pfs += [("3_1", nics[2], 1, 8)]
        for suffix, nic, physnet, vfs in pfs:
            pf = tb.create_provider(f"pf{suffix}", parent=nic)
            tb.set_traits(pf, f"CUSTOM_PHYSNET{physnet}")
            tb.add_inventory(pf, "CUSTOM_VF", vfs)
            os.environ[f"PF{suffix}_UUID"] = pf


class DeepNUMANetworkFixture(NUMANetworkFixture):
    def make_data(self) -> None:
        tb = self.tb
        grandparent = tb.create_provider("gp1")
        parent1 = tb.create_provider("p1", parent=grandparent)
        parent2 = tb.create_provider("p2", parent=grandparent)
        cn1 = tb.create_provider("cn1", parent=parent1)
        cn2 = tb.create_provider("cn2", parent=parent2)
        self.make_entities(cn1, cn2)


class NonSharedStorageFixture(APIFixture):
    def make_data(self) -> None:
        tb = self.tb
        for key in ("AGGA_UUID", "AGGB_UUID", "AGGC_UUID"):
            os.environ[key] = _new()
        for i in (1, 2, 3):
            cn = tb.create_provider(f"cn{i}")
            os.environ[f"CN{i}_UUID"] = cn
            tb.add_inventory(cn, "VCPU", 24)
            tb.add_inventory(cn, "MEMORY_MB", 128 * 1024)
            tb.add_inventory(cn, "DISK_GB", 2000)


class GranularFixture(APIFixture):
    def make_data(self) -> None:
        tb = self.tb
        agg_a, agg_b, agg_c = _new(), _new(), _new()
        os.environ.update(AGGA=agg_a, AGGB=agg_b, AGGC=agg_c)
        tb.ensure_resource_class("CUSTOM_NET_MBPS")
        left = tb.create_provider("cn_left", agg_a)
        os.environ["CN_LEFT"] = left
        for rc, total in (("VCPU", 8), ("MEMORY_MB", 4096), ("DISK_GB", 500), ("VGPU", 8),
                          ("SRIOV_NET_VF", 8), ("CUSTOM_NET_MBPS", 4000)):  # fmt: skip
            tb.add_inventory(left, rc, total)
        tb.set_traits(left, "HW_CPU_X86_AVX", "HW_CPU_X86_AVX2", "HW_GPU_API_DXVA",
                      "HW_NIC_DCB_PFC", "CUSTOM_FOO")  # fmt: skip
        middle = tb.create_provider("cn_middle", agg_a, agg_b)
        os.environ["CN_MIDDLE"] = middle
        for rc, total in (("VCPU", 8), ("MEMORY_MB", 4096), ("SRIOV_NET_VF", 8),
                          ("CUSTOM_NET_MBPS", 4000)):  # fmt: skip
            tb.add_inventory(middle, rc, total)
        tb.set_traits(middle, "HW_CPU_X86_AVX", "HW_CPU_X86_AVX2", "HW_CPU_X86_SSE",
                      "HW_NIC_ACCEL_TLS")  # fmt: skip
        right = tb.create_provider("cn_right", agg_b, agg_c)
        os.environ["CN_RIGHT"] = right
        tb.add_inventory(right, "VCPU", 8)
        tb.add_inventory(right, "MEMORY_MB", 4096)
        tb.add_inventory(right, "DISK_GB", 500)
        tb.add_inventory(right, "VGPU", 8, max_unit=2)
        tb.set_traits(right, "HW_CPU_X86_MMX", "HW_GPU_API_DXVA", "CUSTOM_DISK_SSD")
        disk1 = tb.create_provider("shr_disk_1", agg_a)
        os.environ["SHR_DISK_1"] = disk1
        tb.add_inventory(disk1, "DISK_GB", 1000)
        tb.set_traits(disk1, SHARES, "CUSTOM_DISK_SSD")
        disk2 = tb.create_provider("shr_disk_2", agg_a, agg_b)
        os.environ["SHR_DISK_2"] = disk2
        tb.add_inventory(disk2, "DISK_GB", 1000)
        tb.set_traits(disk2, SHARES)
        net = tb.create_provider("shr_net", agg_c)
        os.environ["SHR_NET"] = net
        tb.add_inventory(net, "SRIOV_NET_VF", 16)
        tb.add_inventory(net, "CUSTOM_NET_MBPS", 40000)
        tb.set_traits(net, SHARES)


class NeutronQoSMultiSegmentFixture(APIFixture):
    """Four compute trees with OVS and SR-IOV agents on segmented physical networks."""

    DIRECT = ("CUSTOM_VNIC_TYPE_DIRECT", "CUSTOM_VNIC_TYPE_DIRECT_PHYSICAL",
              "CUSTOM_VNIC_TYPE_MACVTAP")  # fmt: skip

    def make_data(self) -> None:
        tb = self.tb
        physnets = ("CUSTOM_PHYSNET_OTHER", "CUSTOM_PHYSNET_MSN_S1", "CUSTOM_PHYSNET_MSN_S2")
        sriov_agents: list[str] = []
        for i in range(4):
            name = f"compute{i}"
            bandwidth = 1000 if i == 3 else None
            compute = tb.create_provider(name)
            os.environ[name] = compute
            tb.add_inventory(compute, "VCPU", 8)
            tb.add_inventory(compute, "MEMORY_MB", 4096)
            tb.add_inventory(compute, "DISK_GB", 500)
            ovs = tb.create_provider(f"{name}:Open vSwitch agent", parent=compute)
            os.environ[f"{name}:ovs_agent"] = ovs
            tb.add_inventory(ovs, "NET_PACKET_RATE_KILOPACKET_PER_SEC", 1000)
            tb.set_traits(ovs, "CUSTOM_VNIC_TYPE_NORMAL")
            bridges = [("br-ex", "br_ex", physnets[1] if i == 3 else physnets[i])]
            if i == 3:
                bridges.append(("br-ex2", "br_ex2", physnets[2]))
            for bridge, key, physnet in bridges:
                br = tb.create_provider(f"{name}:Open vSwitch agent:{bridge}", parent=ovs)
                os.environ[f"{name}:{key}"] = br
                for rc in ("NET_BW_EGR_KILOBIT_PER_SEC", "NET_BW_IGR_KILOBIT_PER_SEC"):
                    tb.add_inventory(br, rc, bandwidth or 5000)
                tb.set_traits(br, "CUSTOM_VNIC_TYPE_NORMAL", physnet)
            sriov = tb.create_provider(f"{name}:NIC Switch agent", parent=compute)
            sriov_agents.append(sriov)
            # Placement's fixture names compute2's agent for compute3 too.
            os.environ[f"{name}:sriov_agent"] = sriov_agents[2 if i == 3 else i]
            tb.set_traits(sriov, *self.DIRECT)
            pfs = [("enp129s0f0", "pf0", physnets[1] if i == 3 else physnets[i])]
            if i == 3:
                pfs.append(("enp129s0f1", "pf1", physnets[2]))
            for device, key, physnet in pfs:
                pf = tb.create_provider(f"{name}:NIC Switch agent:{device}", parent=sriov)
                os.environ[f"{name}:{key}"] = pf
                for rc in ("NET_BW_EGR_KILOBIT_PER_SEC", "NET_BW_IGR_KILOBIT_PER_SEC"):
                    tb.add_inventory(pf, rc, bandwidth or 10000)
                tb.set_traits(pf, *self.DIRECT, physnet)
