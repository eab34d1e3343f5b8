"""A HostClient double that records each call and answers what a test set, for the wire
format's tests (the real host behind an agent is covered end to end elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wattvisor.compute.hostclient_wire import WIRE_METHODS


@dataclass
class RecordingHost:
    """``answers[method]`` is returned (or raised, when an exception) by ``method``."""

    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return "recording://"

    @property
    def pushes_energy(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name not in WIRE_METHODS:
            raise AttributeError(name)

        def method(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            answer = self.answers.get(name)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return method
