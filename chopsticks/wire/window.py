"""Flow control of a file stream: how many bytes may be in flight. Sans-IO, both ends.

Remote-safe (shipped in the agent's bundle: keep it small). The controller
(``connection.StreamState``, ``transfer``) and the agent (``agent.main.Stream``) keep one
``Window`` per stream and tell it what happened; nothing here reads or writes.

A stream carries bytes one way, and both ends count the same ``credit``: what the sender may
still send, ``STREAM_WINDOW`` at first. The sender ``spend``s it per ``STREAM`` frame and is
``credited`` per ``CREDIT`` frame; the receiver counts what ``arrived`` and grants back what
it ``consumed``. A peer's data beyond its credit, or a credit that is not a positive int or
would exceed the window (more than was sent), is a ``ProtocolError``; spending credit one
lacks or granting more than arrived is the caller's own bug, a ``ValueError``.
"""

from chopsticks.wire.protocol import STREAM_WINDOW, ProtocolError


class Window(object):
    """The credit of stream ``sid``, as either end sees it."""

    __slots__ = ("sid", "size", "credit")

    def __init__(self, sid, size=STREAM_WINDOW):
        self.sid = sid
        self.size = size
        self.credit = size

    # -- the sender's side ----------------------------------------------------------------

    def fits(self, size):
        """May ``size`` more bytes be sent now?"""
        return size <= self.credit

    def spend(self, size):
        """``size`` bytes are about to be sent: they use up credit the sender has."""
        if not 0 <= size <= self.credit:
            raise ValueError("stream %d: %d bytes to send with %d bytes of credit" % (self.sid, size, self.credit))
        self.credit -= size

    def credited(self, size):
        """The receiver's ``CREDIT``, as decoded: more the sender may send."""
        if type(size) is not int or size <= 0 or self.credit + size > self.size:
            raise ProtocolError("bad credit %r for stream %d" % (size, self.sid))
        self.credit += size

    # -- the receiver's side --------------------------------------------------------------

    def arrived(self, size):
        """A ``STREAM`` frame of ``size`` bytes arrived: it must fit the credit granted."""
        if size < 0:
            raise ValueError("stream %d: a frame of %d bytes" % (self.sid, size))
        if size > self.credit:
            raise ProtocolError("stream %d sent more than its credit" % self.sid)
        self.credit -= size

    def consumed(self, size):
        """The receiver is done with ``size`` bytes that arrived: the credit to grant back
        (none for an empty frame: a ``CREDIT`` of 0 is refused)."""
        if not 0 <= size <= self.size - self.credit:
            raise ValueError("stream %d: %d bytes consumed with %d in flight"
                             % (self.sid, size, self.size - self.credit))
        self.credit += size
        return size
