"""The stream window (wire.window): credit accounting both ends share, tested as pure logic."""

import pytest

from chopsticks.wire import protocol
from chopsticks.wire.window import Window

WINDOW = protocol.STREAM_WINDOW
CHUNK = protocol.STREAM_CHUNK


def test_a_sender_and_a_receiver_agree_on_the_credit_through_a_whole_transfer():
    """Spending, arrivals, consumption and credits keep both ends' counts equal and within the window."""
    sender, receiver = Window(3), Window(3)
    sent = 0
    for _ in range(3 * WINDOW // CHUNK):
        while not sender.fits(CHUNK):  # the receiver consumes the oldest chunk and grants it back
            sender.credited(receiver.consumed(CHUNK))
        sender.spend(CHUNK)
        receiver.arrived(CHUNK)
        sent += CHUNK
        assert sender.credit == receiver.credit and 0 <= sender.credit <= WINDOW
    assert sent == 3 * WINDOW


def test_a_sender_may_have_exactly_one_window_in_flight():
    """A fresh window lets the sender send STREAM_WINDOW bytes and not one more."""
    window = Window(1)
    assert window.fits(WINDOW) and not window.fits(WINDOW + 1)
    window.spend(WINDOW - 1)
    assert window.fits(1) and not window.fits(2)
    with pytest.raises(ValueError):
        window.spend(2)  # the caller's bug, not the peer's


def test_data_beyond_the_credit_granted_is_a_protocol_violation():
    """A receiver refuses a frame that would take the sender past the credit it was given."""
    window = Window(5)
    window.arrived(WINDOW - 10)
    window.arrived(10)
    with pytest.raises(protocol.ProtocolError, match="stream 5 sent more than its credit"):
        window.arrived(1)
    window = Window(6)
    with pytest.raises(protocol.ProtocolError):
        window.arrived(WINDOW + 1)


@pytest.mark.parametrize("credit", [0, -5, 1 << 70, -(1 << 70), True, 1.0, "4", None, [1]])
def test_credits_that_are_not_positive_ints_are_refused(credit):
    """A CREDIT of zero, a negative or huge number, or a non-int is a protocol violation."""
    window = Window(7)
    window.spend(WINDOW)
    with pytest.raises(protocol.ProtocolError, match="bad credit"):
        window.credited(credit)
    assert window.credit == 0


def test_credit_beyond_what_was_sent_is_an_overflow():
    """A receiver may give back only what the sender spent: more would exceed the window."""
    window = Window(8)
    with pytest.raises(protocol.ProtocolError, match="bad credit 1 for stream 8"):
        window.credited(1)  # nothing sent yet
    window.spend(CHUNK)
    window.credited(CHUNK - 1)
    with pytest.raises(protocol.ProtocolError):
        window.credited(2)
    window.credited(1)
    assert window.credit == WINDOW


def test_a_receiver_grants_exactly_what_it_consumed():
    """Consuming a chunk grants its size; an empty frame grants nothing; more than arrived is a bug."""
    window = Window(9)
    window.arrived(CHUNK)
    window.arrived(0)
    assert window.consumed(0) == 0
    assert window.consumed(CHUNK) == CHUNK
    assert window.credit == WINDOW
    with pytest.raises(ValueError):
        window.consumed(1)
    with pytest.raises(ValueError):
        window.consumed(-1)
    with pytest.raises(ValueError):
        window.arrived(-1)
