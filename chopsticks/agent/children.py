"""The process groups of commands the agent started, killed when the agent exits. Remote-safe.

A command that runs in its own session (``helpers.run`` starts every command so) is out of
reach of anything that kills the agent's own process group. While it runs, its group is
registered here; when the agent exits (the controller hung up, or died), whatever is left
is sent SIGTERM, then SIGKILL after ``KILL_GRACE`` seconds, so nothing it started keeps
running on the host.
"""

import os
import time
from _thread import allocate_lock

# How long the groups get to exit after SIGTERM before SIGKILL. It must stay well under the
# controller's own grace for an agent after EOF (``transports.process.EXIT_GRACE``, 2 s),
# or the controller kills the agent before it has killed what it started.
KILL_GRACE = 1.0
# Poll period while waiting for the groups to go: nothing signals a group's end to a process
# that is not the parent of every member.
POLL = 0.02


class ProcessGroups(object):
    """A thread-safe set of live process group ids."""

    def __init__(self):
        self.lock = allocate_lock()
        self.groups = set()

    def add(self, pgid):
        with self.lock:
            self.groups.add(pgid)

    def discard(self, pgid):
        with self.lock:
            self.groups.discard(pgid)

    def kill_all(self, grace=KILL_GRACE):
        """SIGTERM every group, SIGKILL what is left after ``grace`` seconds; reap what we can."""
        with self.lock:
            groups, self.groups = self.groups, set()
        if not groups:
            return
        import signal  # here, not at boot: it imports enum, milliseconds of a fresh agent's start
        alive = [pgid for pgid in groups if _signal(pgid, signal.SIGTERM)]
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(POLL)
            alive = [pgid for pgid in alive if _signal(pgid, 0)]
        for pgid in alive:
            _signal(pgid, signal.SIGKILL)


def _signal(pgid, sig):
    """Signal group ``pgid``; False once it has no members left (zombies of ours reaped)."""
    while True:  # a zombie still counts as a member: reap those that are our children
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            break
        if not pid:
            break
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user (setuid): not ours to kill
        return False
    return True
