"""Transports: byte pipes to a remote agent's stdin, stdout and stderr. No parsing here.

Every transport's pipe implements ``Pipe`` (``process.ProcessPipe``, ``ssh_pipe.SSHPipe``, and
``memory.MemoryPipe`` for tests of the layer above); mypy checks them against it where a
tunnel hands its pipe to ``connection.Connection``, which drives it. Each method may block the
calling greenlet, never the hub.
"""

from typing import Callable, Optional, Protocol


class Pipe(Protocol):
    """A started agent's stdin, stdout and stderr, as bytes."""

    @property
    def end_reason(self) -> Optional[str]:
        """The transport's own account of why the pipe ended, when it knows better than an exit
        status ("the SSH connection was lost (...)"); None until then, or if it never does."""

    @property
    def pid(self) -> Optional[int]:
        """The local process at this end, if there is one (None: an SSH channel)."""

    @property
    def after_kill(self) -> Optional[Callable[[], None]]:
        """What runs once the pipe had to be killed, to clean up after it (a container
        tunnel removes its container); None: nothing."""

    def start_reading(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        """Call ``on_stdout(data)`` and ``on_stderr(data)`` from the hub for each chunk of stdout
        and of stderr; ``b""`` at each one's end. No greenlet per pipe: callbacks must not block."""

    def stop_reading(self) -> None:
        """No more stdout callbacks; stderr is still delivered until its end or ``close``."""

    def write(self, data: bytes) -> None:
        """Write all of ``data`` to stdin; ``BrokenPipeError`` once stdin is closed or the pipe ended."""

    def write_now(self, data) -> memoryview:
        """Write what stdin takes without waiting; return what is left (empty: all of it).
        ``BrokenPipeError`` as for ``write``."""

    def close_stdin(self) -> None:
        """Send end-of-file to the agent, which then exits."""

    def exit_status(self, timeout: Optional[float] = None) -> Optional[int]:
        """The agent's exit status (negative: killed by that signal), waiting up to ``timeout``
        seconds; None if it is still running or cannot be known."""

    def kill(self) -> None:
        """End the agent at once."""

    def close(self) -> None:
        """Release everything (the caller stopped reading first); idempotent."""
