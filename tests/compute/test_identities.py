"""Users and projects have stable uuids, and a guest's owner element carries them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from biscuit_auth import KeyPair
from lxml import etree

from wattvisor.auth import Principal
from wattvisor.compute import Compute, ImageRecord
from wattvisor.compute.identities import IdentityStore
from wattvisor.compute.users import UserStore
from wattvisor.guest import METADATA_NS, validate_domain_xml


def _key() -> str:
    return repr(KeyPair().public_key)


def test_a_users_uuid_survives_new_keys_roles_projects_and_restarts(compute: Compute) -> None:
    first = compute.users.register("carol", "proj-c", "member", _key())
    assert str(uuid.UUID(first.uuid)) == first.uuid
    changed = compute.users.register("carol", "proj-d", "admin", _key(), replace=True)
    assert changed.uuid == first.uuid and changed.project == "proj-d"
    restarted = UserStore(compute.users.engine)
    assert restarted.get("carol").uuid == first.uuid
    assert [u.uuid for u in restarted.list_all() if u.name == "carol"] == [first.uuid]
    other = compute.users.register("dave", "proj-c", "member", _key())
    assert other.uuid != first.uuid
    # A name given up and registered again is somebody new.
    compute.users.delete("carol")
    assert compute.users.register("carol", "proj-c", "member", _key()).uuid != first.uuid


def test_a_projects_uuid_is_recorded_on_first_use_and_kept(compute: Compute) -> None:
    user = compute.users.register("erin", "proj-e", "member", _key())
    project = compute.identities.project("proj-e")
    assert user.project_uuid == project.uuid
    assert IdentityStore(compute.users.engine).project("proj-e") == project
    assert compute.identities.project("proj-f").uuid != project.uuid
    assert [p.name for p in compute.identities.projects()] == ["proj-e", "proj-f"]


def test_first_uses_of_a_project_racing_agree_on_one_uuid(compute: Compute) -> None:
    count = 8
    barrier = threading.Barrier(count)
    seen: list[str] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            store = IdentityStore(compute.users.engine)
            barrier.wait(10)
            seen.append(store.project("racing").uuid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(seen) == count and len(set(seen)) == 1
    assert [p.uuid for p in compute.identities.projects() if p.name == "racing"] == seen[:1]


def test_the_owner_element_holds_uuids_as_attributes_and_names_as_text(
    compute: Compute, kernel_image: ImageRecord, settle: Callable[[str], None]
) -> None:
    user = compute.users.register("gina", "proj-g", "member", _key())
    gina = Principal("gina", "proj-g", "member")
    server = compute.servers.create(gina, "owned", "tiny", kernel_image.name)
    settle(server.uuid)
    record = compute.servers.get(gina, server.uuid)
    assert record.status == "ACTIVE", record.fault
    driver = compute.hosts.client(record.host_uuid or "").driver  # type: ignore[attr-defined]
    for inactive in (False, True):
        xml = driver.domain_xml(record.domain_name, inactive=inactive)
        validate_domain_xml(xml)
        root = etree.fromstring(xml.encode())
        ns = {"w": METADATA_NS}
        [owner_user] = root.findall("metadata/w:instance/w:owner/w:user", ns)
        [owner_project] = root.findall("metadata/w:instance/w:owner/w:project", ns)
        assert (owner_user.get("uuid"), owner_user.text) == (user.uuid, "gina")
        assert (owner_project.get("uuid"), owner_project.text) == (user.project_uuid, "proj-g")
