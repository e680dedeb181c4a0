"""Helpers to run on remote hosts: commands and their output. Remote-safe: standard library, Python 3.9.

``output_lines`` is the original chopsticks' helper; ``run`` is what ``python -m
chopsticks.fanout run`` calls. A command given as a string runs through ``/bin/sh -c``; a
list runs as is. Both start the command in its own session, so a timeout kills the whole
process group, children and grandchildren included; inside an agent the group is also
registered with it, so it is killed if the controller goes away mid-command.
"""

import os
import selectors
import signal
import subprocess
import sys
import time

# How much output ``run`` keeps per stream by default; the rest is read and dropped, so a
# command printing gigabytes neither fills the host's memory nor blocks on a full pipe.
MAX_OUTPUT = 16 << 20
# Bytes per read of the command's output, and per write of its input (PIPE_BUF: a pipe
# reported writable takes that much without blocking).
READ_SIZE = 65536
WRITE_SIZE = 4096


def _popen(command, cwd=None, env=None):
    return subprocess.Popen(
        command, shell=isinstance(command, str), cwd=cwd, env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _agent_groups():
    """The running agent's registry of process groups; None outside an agent."""
    main = sys.modules.get("chopsticks.agent.main")  # never imported here for its own sake
    agent = getattr(main, "AGENT", None)
    return agent.children if agent is not None else None


class _Exchange(object):
    """Feeds the command its input and reads both its outputs, keeping the first ``limit``
    bytes of each; what comes after is read and dropped (``truncated``)."""

    def __init__(self, proc, data, limit):
        self.proc = proc
        self.limit = limit
        self.kept = {proc.stdout: bytearray(), proc.stderr: bytearray()}
        self.truncated = False
        self.pending = memoryview(data or b"")
        self.selector = selectors.DefaultSelector()
        for stream in self.kept:
            self.selector.register(stream, selectors.EVENT_READ)
        if self.pending:
            self.selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()

    def pump(self, deadline=None):
        """Move bytes until both outputs end (True) or the ``deadline`` passes (False)."""
        while self.selector.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            for key, _ in self.selector.select(left):
                if key.fileobj is self.proc.stdin:
                    self.write()
                else:
                    self.read(key.fileobj)
        return True

    def write(self):
        try:
            self.pending = self.pending[os.write(self.proc.stdin.fileno(), self.pending[:WRITE_SIZE]):]
        except BrokenPipeError:  # the command does not read all of it: fine
            self.pending = self.pending[:0]
        if not self.pending:
            self.selector.unregister(self.proc.stdin)
            self.proc.stdin.close()

    def read(self, stream):
        chunk = os.read(stream.fileno(), READ_SIZE)
        if not chunk:
            self.selector.unregister(stream)
            return
        kept = self.kept[stream]
        room = self.limit - len(kept)
        kept += chunk[:room]
        self.truncated = self.truncated or len(chunk) > room

    def text(self, stream):
        return bytes(self.kept[stream]).decode("utf-8", "surrogateescape")


def _exited(proc, deadline):
    """Wait for the command to exit until ``deadline``; False if it is still running."""
    try:
        proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def run(command, timeout=None, cwd=None, env=None, input=None, max_output=MAX_OUTPUT):
    """Run ``command``; return ``{'exit_code', 'stdout', 'stderr', 'timed_out', 'truncated'}``.

    stdout and stderr are text (undecodable bytes escaped), each its first ``max_output``
    bytes; ``truncated`` is True when either had more (the rest was read and dropped).
    After ``timeout`` seconds the command's whole process group is killed and ``timed_out``
    is True. A command that cannot be started raises (FileNotFoundError, PermissionError).
    """
    if type(max_output) is not int or max_output < 0:
        raise ValueError("max_output must be a number of bytes, got %r" % (max_output,))
    proc = _popen(command, cwd, env)
    groups = _agent_groups()
    if groups is not None:
        groups.add(proc.pid)
    try:
        with proc:
            exchange = _Exchange(proc, input.encode() if isinstance(input, str) else input, max_output)
            deadline = None if timeout is None else time.monotonic() + timeout
            with exchange.selector:
                timed_out = not (exchange.pump(deadline) and _exited(proc, deadline))
                if timed_out:
                    _kill_group(proc)
                    exchange.pump()
    finally:
        _kill_group(proc)  # what the command left running in its group goes with it
        if groups is not None:
            groups.discard(proc.pid)
    return {
        "exit_code": proc.returncode,
        "stdout": exchange.text(proc.stdout),
        "stderr": exchange.text(proc.stderr),
        "timed_out": timed_out,
        "truncated": exchange.truncated,
    }


def output_lines(commandline, **kwargs):
    """Run a command and return its stdout as a list of lines.

    A non-zero exit raises ``subprocess.CalledProcessError`` carrying stdout and stderr.
    """
    result = run(commandline, **kwargs)
    if result["exit_code"] != 0 or result["timed_out"]:
        raise subprocess.CalledProcessError(result["exit_code"], commandline, result["stdout"], result["stderr"])
    return result["stdout"].splitlines()
