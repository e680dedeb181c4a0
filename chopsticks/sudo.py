"""The agent under sudo: never a prompt, or a password given only to sudo's own prompt. Controller-side.

Without a password, the agent runs under ``sudo -n``: a sudo that wants one fails at once,
and ``explain`` says so. With ``sudo_password=`` (the CLI's ``--ask-become-pass``), it runs
under ``sudo -S`` with a prompt of our own, random per start::

    sudo -S -p '[chopsticks sudo 5f0c...] password:\\n' -u USER -- \\
        /bin/sh -c 'printf "%s\\n" "$0" >&2; exec "$@"' '[chopsticks sudo 5f0c...] ready' python3 -S -c ...

and the connection (``Connection``'s ``gate``) holds the bootstrap back until stderr shows
either that exact prompt line, answered with the password, or the ready line the shell prints
once sudo let it run. The password is never written ahead of the bootstrap, never to anything
but that prompt, at most once per start, and never appears in a repr, a log or an error: a
second prompt (the password was wrong) ends the start with one ``ConnectError`` that says so.
"""

import secrets
from typing import List, Optional

import gevent
import gevent.event

from chopsticks.connection import Explained
from chopsticks.errors import ConnectError
from chopsticks.transports import Pipe

# What the shell between sudo and the agent runs: say it is running, then become the agent.
_READY_SHELL = 'printf "%s\\n" "$0" >&2; exec "$@"'


def sudo_argv(user: str, argv: List[str], prompt: "Optional[SudoPrompt]" = None) -> List[str]:
    """``argv`` run as ``user`` by sudo: ``sudo -n`` (no password), or answering ``prompt``."""
    if prompt is None:
        return ["sudo", "-n", "-u", user, "--"] + argv
    return (["sudo", "-S", "-p", prompt.prompt + "\n", "-u", user, "--", "/bin/sh", "-c", _READY_SHELL, prompt.ready]
            + argv)


def explain(stderr: List[str]) -> Optional[Explained]:
    """Why an agent started through ``sudo -n`` ended before it started, if sudo said so."""
    if any("sudo:" in line and "password" in line for line in stderr):
        return ConnectError, ("sudo asks for a password on this host; chopsticks runs sudo non-interactively "
                              "(sudo -n): allow the command with NOPASSWD, or give sudo_password= "
                              "(--ask-become-pass)")
    return None


class SudoPrompt:
    """One start's gate: the bootstrap waits for ``opened``; ``refused`` if sudo asked twice."""

    def __init__(self, password: str):
        token = secrets.token_hex(12)
        self.prompt = "[chopsticks sudo %s] password:" % token
        self.ready = "[chopsticks sudo %s] ready" % token
        self._password = password
        self.opened = gevent.event.Event()
        self.refused = False
        self._answered = False

    def __repr__(self) -> str:
        return "<SudoPrompt %s>" % ("refused" if self.refused else "open" if self.opened.is_set() else "waiting")

    def on_line(self, line: str, pipe: Pipe) -> bool:
        """A stderr line of the starting agent: True if it was ours (and is not shown)."""
        if self.opened.is_set():
            return False
        if line == self.ready:
            self.opened.set()
            return True
        if line == self.prompt:
            if self._answered:  # asked again: the password was wrong
                self.refused = True
                self.opened.set()
            else:
                self._answered = True
                gevent.spawn(_write_quietly, pipe, (self._password + "\n").encode())
            return True
        return False

    def error(self, host: str, user: str) -> ConnectError:
        return ConnectError("[%s] sudo refused the password for running as %s" % (host, user))


def _write_quietly(pipe: Pipe, data: bytes) -> None:
    try:
        pipe.write(data)
    except OSError:
        pass  # the start ends; the connection says why
