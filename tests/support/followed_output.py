"""The stdout of a running command, read as it arrives: for ``--follow`` style commands.

``select`` + ``readline`` on a text pipe loses track of lines already sitting in
Python's buffer (select only sees the pipe), so a test could wait forever for a
line that arrived long ago. This reads the pipe's file descriptor directly.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time


class FollowedOutput:
    """Everything a process printed on stdout so far (it must be started with stdout=PIPE)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.data = b""

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def wait_for(self, wanted: str, timeout_s: float) -> str:
        """The output once it contains ``wanted``; AssertionError with the output if not in time."""
        deadline = time.monotonic() + timeout_s
        while wanted not in self.text:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted!r} within {timeout_s:.0f} s; output:\n{self.text[-3000:]}"
            with selectors.DefaultSelector() as selector:  # epoll: no limit on fd numbers
                selector.register(self.fd, selectors.EVENT_READ)
                ready = selector.select(min(left, 1.0))
            if ready:
                chunk = os.read(self.fd, 65536)
                assert chunk or self.proc.poll() is None or wanted in self.text, (
                    f"the command ended without printing {wanted!r}: {self.text[-3000:]}"
                )
                self.data += chunk
        return self.text

    def finish(self, timeout_s: float) -> tuple[str, str]:
        """Wait for the process to end: (all of stdout, stderr)."""
        rest, errors = self.proc.communicate(timeout=timeout_s)
        self.data += rest
        return self.text, errors.decode(errors="replace")
