"""The agent's side: its own key on disk, host tokens, and require_controller, which lets
only the controllers of the cluster it joined call it.

(No ``from __future__ import annotations``: the test apps' routes name a local dependency.)
"""

import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from biscuit_auth import KeyPair
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from wattvisor.agent.credentials import AgentCredentials, NotJoined, make_controller_dependency
from wattvisor.auth import mint_token
from wattvisor.auth.fastapi import install_auth_errors
from wattvisor.auth.service_tokens import (
    ServiceTokenVerifier,
    TrustedKey,
    VerifiedServiceToken,
    mint_controller_token,
    mint_host_token,
)

CLUSTER = str(uuid.uuid4())
HOST = str(uuid.uuid4())


def answer(keys: list[tuple[str, datetime | None]], cluster: str = CLUSTER) -> dict[str, Any]:
    return {
        "host_id": HOST,
        "cluster_id": cluster,
        "cluster_keys": [
            {"public_key": k, "valid_until": u.isoformat() if u else None} for k, u in keys
        ],
        "server_time": datetime.now(UTC).isoformat(),
    }


class Agent:
    def __init__(self, data_dir: Path, cluster_key: KeyPair) -> None:
        self.credentials = AgentCredentials(data_dir)
        self.credentials.ensure_host_key()
        self.credentials.learn(answer([(repr(cluster_key.public_key), None)]), "http://c")
        app = FastAPI()
        install_auth_errors(app)
        require_controller = make_controller_dependency(self.credentials)

        @app.post("/agent/spawn")
        def spawn(
            caller: Annotated[VerifiedServiceToken, Depends(require_controller)],
        ) -> dict[str, str]:
            return {"cluster": caller.subject}

        self.client = TestClient(app)

    def call(self, token: str | None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.client.post("/agent/spawn", headers=headers)


@pytest.fixture
def cluster_key() -> KeyPair:
    return KeyPair()


@pytest.fixture
def agent(tmp_path: Path, cluster_key: KeyPair) -> Iterator[Agent]:
    made = Agent(tmp_path / "agent", cluster_key)
    yield made
    made.client.close()


def test_the_host_key_is_private_to_its_owner(agent: Agent) -> None:
    mode = stat.S_IMODE(agent.credentials.key_path.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(agent.credentials.key_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(agent.credentials.trust_path.stat().st_mode) == 0o600


def test_host_tokens_verify_with_the_hosts_public_key(agent: Agent) -> None:
    token = agent.credentials.host_token()
    keys = {HOST: [TrustedKey(agent.credentials.public_key())]}
    verifier = ServiceTokenVerifier("host", keys.get)
    assert verifier.verify(token).subject == HOST


def test_a_controller_of_the_cluster_is_admitted(agent: Agent, cluster_key: KeyPair) -> None:
    response = agent.call(mint_controller_token(cluster_key.private_key, CLUSTER))
    assert response.status_code == 200, response.text
    assert response.json() == {"cluster": CLUSTER}


@pytest.mark.parametrize("role", ["member", "admin"])
def test_a_user_token_cannot_call_an_agent(agent: Agent, role: str) -> None:
    """Whatever the user's role and whichever key signed it (even the cluster's)."""
    user_key = KeyPair()
    response = agent.call(mint_token(user_key.private_key, role, timedelta(minutes=5)))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "token_wrong_kind"
    assert "a user token is not accepted by this agent" in error["message"]


def test_a_user_token_signed_with_the_cluster_key_is_still_refused(
    agent: Agent, cluster_key: KeyPair
) -> None:
    response = agent.call(mint_token(cluster_key.private_key, "admin", timedelta(minutes=5)))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_wrong_kind"


def test_a_host_token_cannot_call_an_agent(agent: Agent) -> None:
    response = agent.call(agent.credentials.host_token())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_wrong_kind"


def test_a_controller_of_another_cluster_is_refused(agent: Agent) -> None:
    other_key = KeyPair()
    other = str(uuid.uuid4())
    response = agent.call(mint_controller_token(other_key.private_key, other))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "token_foreign_cluster"
    assert other in error["message"] and CLUSTER in error["message"]


def test_a_controller_token_forged_for_this_cluster_is_refused(agent: Agent) -> None:
    response = agent.call(mint_controller_token(KeyPair().private_key, CLUSTER))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_signature_invalid"


def test_no_token_or_a_malformed_one_is_refused(agent: Agent) -> None:
    assert agent.call(None).json()["error"]["code"] == "missing_credentials"
    assert agent.call("garbage").json()["error"]["code"] == "token_malformed"


def test_the_agent_follows_a_cluster_key_rotation_its_heartbeat_answer_announces(
    agent: Agent, cluster_key: KeyPair
) -> None:
    new = KeyPair()
    grace_end = datetime.now(UTC) + timedelta(hours=1)
    agent.credentials.learn(
        answer([(repr(new.public_key), None), (repr(cluster_key.public_key), grace_end)])
    )
    assert agent.call(mint_controller_token(new.private_key, CLUSTER)).status_code == 200
    assert agent.call(mint_controller_token(cluster_key.private_key, CLUSTER)).status_code == 200
    # The grace period is over: the next heartbeat answer no longer lists the old key,
    # and a key past its valid_until is refused even while still listed.
    agent.credentials.learn(
        answer(
            [
                (repr(new.public_key), None),
                (repr(cluster_key.public_key), datetime.now(UTC) - timedelta(seconds=1)),
            ]
        )
    )
    refused = agent.call(mint_controller_token(cluster_key.private_key, CLUSTER))
    assert refused.status_code == 401
    assert "retired at" in refused.json()["error"]["message"]
    assert agent.call(mint_controller_token(new.private_key, CLUSTER)).status_code == 200


def test_an_answer_for_another_cluster_is_not_learnt(agent: Agent) -> None:
    with pytest.raises(Exception, match="this agent joined cluster"):
        agent.credentials.learn(answer([(repr(KeyPair().public_key), None)], str(uuid.uuid4())))
    assert agent.credentials.trust().cluster_id == CLUSTER


def test_an_agent_that_never_joined_admits_nobody(tmp_path: Path) -> None:
    credentials = AgentCredentials(tmp_path / "fresh")
    with pytest.raises(NotJoined, match="has not joined"):
        credentials.trust()
    app = FastAPI()
    install_auth_errors(app)
    require_controller = make_controller_dependency(credentials)

    @app.get("/agent/ping")
    def ping(caller: Annotated[VerifiedServiceToken, Depends(require_controller)]) -> str:
        return "pong"

    with TestClient(app) as client:
        token = mint_controller_token(KeyPair().private_key, CLUSTER)
        response = client.get("/agent/ping", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "has not joined" in response.json()["error"]["message"]


def test_host_tokens_name_the_host(agent: Agent) -> None:
    pair = KeyPair()
    with pytest.raises(ValueError, match="not a lower-case uuid"):
        mint_host_token(pair.private_key, "HOST")


def test_the_agent_keeps_the_name_and_pairs_its_controller_last_answered(
    agent: Agent, cluster_key: KeyPair
) -> None:
    keys = [(repr(cluster_key.public_key), None)]
    assert agent.credentials.place() is None
    agent.credentials.learn({**answer(keys), "host_name": "edge-1", "geolocation": ["1,2"]})
    assert agent.credentials.place() == ("edge-1", ("1,2",))
    # An answer that does not say (a key rotation's) leaves it as it was.
    agent.credentials.learn({**answer(keys), "host_name": None, "geolocation": None})
    assert agent.credentials.place() == ("edge-1", ("1,2",))
    agent.credentials.learn({**answer(keys), "host_name": "edge-1", "geolocation": []})
    assert agent.credentials.place() == ("edge-1", ())


class StepClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_host_token_is_reused_until_half_its_lifetime_passed(
    tmp_path: Path, cluster_key: KeyPair
) -> None:
    clock = StepClock()
    credentials = AgentCredentials(tmp_path / "agent", clock=clock)
    credentials.ensure_host_key()
    credentials.learn(answer([(repr(cluster_key.public_key), None)]), "http://c")
    first = credentials.host_token(timedelta(minutes=4))
    clock.now += timedelta(minutes=1, seconds=59)
    assert credentials.host_token(timedelta(minutes=4)) == first
    assert credentials.host_token(timedelta(minutes=2)) != first
    clock.now += timedelta(minutes=2)
    renewed = credentials.host_token(timedelta(minutes=4))
    assert renewed != first
    keys = {HOST: [TrustedKey(credentials.public_key())]}
    verifier = ServiceTokenVerifier("host", keys.get, clock=clock)
    assert verifier.verify(renewed).expires == clock.now.replace(microsecond=0) + timedelta(
        minutes=4
    )


def test_a_new_host_key_mints_a_new_token_at_once(agent: Agent) -> None:
    first = agent.credentials.host_token()
    assert agent.credentials.host_token() == first
    new = KeyPair()
    with agent.credentials._lock:
        agent.credentials._key = new.private_key
    token = agent.credentials.host_token()
    assert token != first
    keys = {HOST: [TrustedKey(repr(new.public_key))]}
    assert ServiceTokenVerifier("host", keys.get).verify(token).subject == HOST
