"""Flow control of a file stream: how many bytes may be in flight. Sans-IO, both ends.

Remote-safe: standard library only, Python 3.9 syntax. Nothing here reads or writes; the
controller (``connection.StreamState``, ``transfer``) and the agent (``agent.main.Stream``)
each keep one ``Window`` per stream and tell it what happened.

The rules, in one place. A stream carries bytes one way. Both ends count the same number,
``credit``: the bytes the sender may still send before the receiver acknowledges more. It
starts at ``STREAM_WINDOW``. The sender ``spend``s credit for each ``STREAM`` frame it
sends and is ``credited`` by each ``CREDIT`` frame it receives; the receiver counts each
frame that ``arrived`` and, once it has ``consumed`` a chunk (written it out), grants exactly
that many bytes back in a ``CREDIT`` frame. So neither end ever holds more than the window
unacknowledged, and a peer that breaks the rules is caught here:

- data beyond the credit the receiver granted (``arrived``);
- a credit that is not a positive int, or that would give the sender more than the window,
  that is more than it ever sent (``credited``).

Those are ``ProtocolError``: the peer broke the protocol. Spending credit one does not have
or granting more than arrived is the caller's own bug: ``ValueError``.
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
