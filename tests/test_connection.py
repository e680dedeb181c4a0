"""Connection's protocol logic over the in-memory pipe pair: who is to blame, and who explains a failed start.

These tests play the agent by hand (``transports.memory``); everything with a real agent,
process or socket is tested elsewhere.
"""

import msgpack
import pytest

import chopsticks
from chopsticks.connection import REQUEST_BACKLOG, Connection
from chopsticks.errors import ConnectError, InternalError, ProtocolViolation, PythonNotFound, TunnelClosed
from chopsticks.modules import ModuleServer
from chopsticks.transports.memory import memory_pair
from chopsticks.tunnel import SSHTunnel, Sudo
from chopsticks.wire import codec, protocol

HELLO = msgpack.packb({"pid": 1, "python": [3, 11, 0], "executable": "/usr/bin/python3"})


def connect(explain=None):
    """A Connection on a memory pipe, and the far end playing the agent (not yet started)."""
    pipe, agent = memory_pair()
    conn = Connection("mem", pipe, ModuleServer(frozenset()), 1 << 20, on_output=lambda host, line: None,
                      explain=explain)
    return conn, agent


def started():
    """A Connection whose agent said HELLO."""
    conn, agent = connect()
    agent.send_bytes(protocol.SYNC)
    agent.send(protocol.HELLO, 0, HELLO)
    assert conn.hello["python"] == [3, 11, 0]
    return conn, agent


def test_a_call_round_trips_over_the_memory_pipe(no_leaks):
    """A submitted call reaches the agent end as a CALL frame, and its RESULT resolves the future."""
    conn, agent = started()
    future = conn.submit(b"pickled call")
    assert agent.received() == [(protocol.CALL, future.req_id, b"pickled call")]
    agent.send(protocol.RESULT, future.req_id, codec.encode(42))
    assert future.result() == 42
    conn.close()
    assert isinstance(conn.error, TunnelClosed)


def test_a_bug_in_a_frame_handler_is_our_bug(no_leaks):
    """An exception raised by our own frame handler is an InternalError that says it is chopsticks'
    bug, with the handler's exception as its cause, not a ProtocolViolation blamed on the remote."""
    conn, agent = started()

    def buggy(self, frame):
        raise KeyError("oops")

    conn.HANDLERS = {**Connection.HANDLERS, protocol.RESULT: buggy}
    future = conn.submit(b"call")
    agent.send(protocol.RESULT, future.req_id, codec.encode(1))
    with pytest.raises(InternalError) as info:
        future.result()
    assert not isinstance(info.value, ProtocolViolation)
    assert "bug in chopsticks" in str(info.value) and "KeyError" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, chopsticks.ChopsticksError)
    conn.close()


def test_malformed_frames_from_the_remote_stay_protocol_violations(no_leaks):
    """Bytes the remote got wrong (an undecodable HELLO payload) are still a ProtocolViolation."""
    conn, agent = connect()
    agent.send_bytes(protocol.SYNC)
    agent.send(protocol.HELLO, 0, b"\xc1")  # 0xc1: never valid msgpack
    with pytest.raises(ProtocolViolation, match="broke the protocol"):
        conn.handshake(b"", 5.0, 5.0)
    conn.close()


def test_a_failed_start_is_explained_by_the_tunnels_hook_only(no_leaks):
    """An agent that ends before HELLO is explained by the tunnel's hook; Connection itself reads
    nothing into stderr: a sudo prompt without a hook is a plain ConnectError."""
    conn, agent = connect(explain=Sudo("nobody")._explain_failed_start)
    agent.send_stderr(b"sudo: a password is required\n")
    agent.exit(1)
    with pytest.raises(ConnectError, match="sudo asks for a password") as info:
        conn.handshake(b"", 5.0, 5.0)
    assert "sudo: a password is required" in str(info.value)  # the stderr note follows

    conn, agent = connect()
    agent.send_stderr(b"sudo: a password is required\n")
    agent.exit(1)
    with pytest.raises(ConnectError) as info:
        conn.handshake(b"", 5.0, 5.0)
    assert "sudo asks" not in str(info.value) and "exited before it started (exit status 1)" in str(info.value)


def test_every_tunnel_kind_explains_a_missing_python(no_leaks):
    """Exit status 127 before HELLO is PythonNotFound through the base tunnel's hook, for SSH too;
    an SSH tunnel with sudo recognises sudo's prompt the way Sudo does."""
    tunnel = SSHTunnel("h", ssh_config="", sudo=True)
    conn, agent = connect(explain=tunnel._explain_failed_start)
    agent.exit(127)
    with pytest.raises(PythonNotFound, match="no usable Python"):
        conn.handshake(b"", 5.0, 5.0)
    assert tunnel._explain_failed_start(1, ["sudo: a terminal is required to read the password"])[0] is ConnectError
    assert SSHTunnel("h", ssh_config="")._explain_failed_start(1, ["sudo: password"]) is None


def test_the_transports_own_account_of_an_end_is_used(no_leaks):
    """A pipe's end_reason (part of the Pipe interface) is what a lost tunnel's error says."""
    conn, agent = started()
    future = conn.submit(b"call")
    agent.exit(None, reason="the SSH connection was lost (SocketRecvError)")
    with pytest.raises(TunnelClosed, match="the SSH connection was lost"):
        future.result()
    conn.close()


def test_import_requests_are_answered_in_order_by_a_server_that_ends_when_idle(no_leaks):
    """The agent's import requests are answered in the order asked, by one greenlet that ends
    once none is left (an idle tunnel holds no greenlet), and a later request is served anew."""
    conn, agent = started()
    for req_id, name in ((7, "json"), (8, "no_such_module")):
        agent.send(protocol.IMPORT, req_id, codec.encode(name))
    conn._request_server.join(5)
    assert [(kind, req_id) for kind, req_id, _ in agent.received()] == [(protocol.MODULES, 7), (protocol.MODULES, 8)]
    assert conn._request_server is None
    agent.send(protocol.IMPORT, 9, codec.encode("json"))
    conn._request_server.join(5)
    assert [(kind, req_id) for kind, req_id, _ in agent.received()] == [(protocol.MODULES, 9)]
    conn.close()


def test_a_flood_of_import_requests_is_a_protocol_violation(no_leaks):
    """More import requests waiting than the backlog allows break the protocol: the tunnel closes."""
    conn, agent = started()
    future = conn.submit(b"call")
    for req_id in range(1, REQUEST_BACKLOG + 2):
        agent.send(protocol.IMPORT, req_id, codec.encode("json"))
    with pytest.raises(ProtocolViolation, match="import and data requests unanswered"):
        future.result(timeout=5)
    conn.close()
