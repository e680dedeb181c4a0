"""Calls over a real Local tunnel: a subprocess of the system python3 running the agent."""

import gc
import json
import os
import socket
import threading
import time

import gevent
import pytest

import remote_helpers as rh
from chopsticks import (
    CallTimeout, ConnectError, PythonNotFound, RemoteException, ResultTooLarge, SerializationError,
    TunnelClosed,
)
from chopsticks.tunnel import Local


def test_call_returns_remote_result(local):
    """A call runs in the remote process and returns its value."""
    assert local.call(rh.add, 2, b=3) == 5
    assert local.call(os.getpid) != os.getpid()
    assert local.call(time.time) == pytest.approx(time.time(), abs=5)


def test_connects_lazily_and_reports_state(local):
    """The tunnel starts no process until first used, then says it is connected."""
    assert not local.connected
    local.call(rh.echo, 1)
    assert local.connected
    assert local.remote_info["python"][0] == 3


def test_context_manager_and_reuse_after_close(no_leaks):
    """A closed tunnel reconnects on the next use, with a fresh agent."""
    with Local("ctx") as tunnel:
        first = tunnel.call(rh.getpid)
    assert not tunnel.connected
    with tunnel:
        second = tunnel.call(rh.getpid)
    assert first != second


def test_remote_exception_carries_type_message_and_traceback(local):
    """A remote error raises RemoteException with the remote traceback, source lines included."""
    with pytest.raises(RemoteException) as info:
        local.call(rh.raise_value_error, "boom")
    err = info.value
    assert err.remote_type == "builtins.ValueError"
    assert err.remote_message == "boom"
    assert "raise ValueError(message)" in err.remote_traceback
    assert "remote_helpers.py" in err.remote_traceback
    assert "[local-test] ValueError: boom" in str(err)
    assert local.call(rh.add, 1, 1) == 2  # the tunnel stays usable


def test_many_calls_in_flight_run_concurrently(local):
    """Calls in flight on one tunnel run at once on the remote and each result reaches its caller."""
    futures = [local.call_async(rh.wait_for_peers, "barrier-1", 5) for _ in range(5)]
    idents = [f.result(timeout=20) for f in futures]
    assert len(set(idents)) == 5
    futures = [local.call_async(rh.echo, i) for i in range(200)]
    assert [f.result(timeout=20) for f in futures] == list(range(200))


def test_calls_from_many_greenlets(local):
    """Greenlets sharing a tunnel each get their own result."""
    jobs = [gevent.spawn(local.call, rh.sleep_and_return, 0.01 * (i % 3), i) for i in range(30)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    assert [j.value for j in jobs] == list(range(30))


def test_timeout_raises_timeouterror_and_tunnel_survives(local):
    """call(timeout=) raises CallTimeout, a TimeoutError, and later calls still work."""
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        local.call(rh.sleep_and_return, 30, None, timeout=0.5)
    assert isinstance(info.value, CallTimeout)
    assert time.monotonic() - started < 5
    assert local.call(rh.add, 2, 2) == 4


def test_supported_result_types_round_trip(local):
    """Every type of the closed set comes back as the same value and type."""
    import datetime
    import decimal
    import uuid
    values = [
        None, True, 3, 2 ** 100, -2 ** 70, 1.5, "text", b"bytes", [1, [2]],
        (1, (2, 3)), {"a": {1: (2,)}}, {1, 2}, frozenset({3}), 1 + 2j,
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6), datetime.date(2024, 1, 2), datetime.time(1, 2),
        datetime.timedelta(days=1, microseconds=5), decimal.Decimal("1.25"), uuid.uuid4(),
        {(1, 2): frozenset({"x"})},
    ]
    for value in values:
        got = local.call(rh.echo, value)
        assert got == value and type(got) is type(value), value


def test_unsupported_result_type_fails_that_call_only(local):
    """A result outside the closed set fails with an error naming its type."""
    with pytest.raises(RemoteException) as info:
        local.call(rh.return_lock)
    assert "lock" in str(info.value) and "supported types" in str(info.value)
    assert local.call(rh.add, 1, 2) == 3


def test_unpicklable_argument_fails_before_sending(local):
    """An argument that cannot be pickled raises SerializationError naming it; nothing starts."""
    with pytest.raises(SerializationError) as info:
        local.call(rh.echo, threading.Lock())
    assert "argument 1" in str(info.value)
    sock = socket.socket()
    try:
        with pytest.raises(TypeError):
            local.call(rh.echo, sock)
    finally:
        sock.close()
    assert not local.connected


def test_large_result_is_chunked(local):
    """A result bigger than one frame arrives whole."""
    assert len(local.call(rh.big_bytes, 5 * 1024 * 1024 + 17)) == 5 * 1024 * 1024 + 17


def test_result_over_limit_is_refused_clearly(no_leaks):
    """A result over max_result fails that call with ResultTooLarge; the tunnel goes on."""
    with Local("small", max_result=1024) as tunnel:
        with pytest.raises(ResultTooLarge) as info:
            tunnel.call(rh.big_bytes, 4096)
        assert "max_result" in str(info.value)
        assert tunnel.call(rh.add, 1, 2) == 3


def test_large_argument_is_chunked(local):
    """An argument bigger than one frame reaches the remote whole."""
    data = os.urandom(3 * 1024 * 1024)
    assert local.call(rh.echo, data) == data


def test_sys_exit_gives_clear_error_and_closes(local):
    """Remote sys.exit fails the call clearly and the tunnel reports itself closed."""
    with pytest.raises(RemoteException) as info:
        local.call(rh.exit_with, 3)
    assert "sys.exit(3)" in str(info.value)
    assert local.closed
    assert local.call(rh.add, 1, 1) == 2  # the very next call starts a fresh agent


def test_os_exit_fails_every_pending_call(local):
    """The agent dying fails every pending call at once with TunnelClosed and its status."""
    slow = [local.call_async(rh.sleep_and_return, 30, i) for i in range(3)]
    started = time.monotonic()
    with pytest.raises(TunnelClosed) as info:
        local.call(rh.hard_exit, 7)
    assert "status 7" in str(info.value)
    for future in slow:
        with pytest.raises(TunnelClosed):
            future.result(timeout=5)
    assert time.monotonic() - started < 5
    assert local.closed


def test_print_and_stderr_are_forwarded_with_host_name(local, capfd):
    """Remote print, stderr and subprocess output reach the controller as [name] lines."""
    assert local.call(rh.print_lines, "hello", "world") == 2
    assert local.call(rh.subprocess_prints, "from-child") == 0
    assert local.call(rh.read_stdin) == ""
    local.call(rh.write_stderr, "to stderr\npartial")  # the unfinished line shows at close
    local.close()
    err = capfd.readouterr().err
    for line in ("hello", "world", "to stderr", "partial", "from-child"):
        assert "[local-test] %s\n" % line in err


def test_a_connected_tunnel_leaves_no_greenlet_waiting(no_leaks, capfd):
    """A connected, idle tunnel holds no greenlet (stdout and stderr are read by callbacks from
    the hub), and its agent's stderr is still shown."""
    before = _live_greenlets()
    tunnel = Local("quiet")
    try:
        tunnel.call(rh.write_stderr, "from the agent\n")
        assert _live_greenlets() == before
    finally:
        tunnel.close()
    assert "[quiet] from the agent\n" in capfd.readouterr().err


def _live_greenlets():
    gc.collect()
    return [g for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and not g.dead]


def test_missing_python_is_a_clear_error(no_leaks):
    """A python that does not exist raises PythonNotFound."""
    with pytest.raises(PythonNotFound) as info:
        Local("nopy", python="/nonexistent/python3").call(rh.add, 1, 1)
    assert "/nonexistent/python3" in str(info.value)
    assert isinstance(info.value, ConnectError) and isinstance(info.value, ConnectionError)


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_old_python_is_a_clear_error(tmp_path, no_leaks):
    """A python older than 3.9 (3.8, say) is refused by stage 1 with its version in the message."""
    fake = _script(tmp_path, "python3.8", 'exec /usr/bin/python3 -c "import sys; '
                   "sys.version_info = (3, 8, 20, 'final', 0); sys.version = '3.8.20 fake'; "
                   'exec(sys.argv[1])" "$3"\n')
    with pytest.raises(PythonNotFound) as info:
        Local("oldpy", python=fake).call(rh.add, 1, 1)
    assert "3.9 or newer" in str(info.value) and "3.8.20" in str(info.value)


def test_shell_without_python_command(tmp_path, no_leaks):
    """A remote shell that cannot find the interpreter (status 127) raises PythonNotFound."""
    fake = _script(tmp_path, "python3", "echo 'sh: python3: not found' >&2\nexit 127\n")
    with pytest.raises(PythonNotFound) as info:
        Local("nopy2", python=fake).call(rh.add, 1, 1)
    assert "python3: not found" in str(info.value)


def test_login_banner_before_bootstrap_is_skipped(tmp_path, local, capfd):
    """Junk a login shell prints to stdout before the agent starts does not break it."""
    fake = _script(tmp_path, "python3", "echo 'Welcome to host!'\nprintf 'motd \\000\\377 junk'\n"
                   'exec /usr/bin/python3 "$@"\n')
    with Local("banner", python=fake) as tunnel:
        assert tunnel.call(rh.add, 20, 22) == 42
    assert "[banner] Welcome to host!" in capfd.readouterr().err


def test_agent_that_never_starts_hits_connect_timeout(tmp_path, no_leaks):
    """A remote that never answers the bootstrap raises ConnectError after connect_timeout."""
    fake = _script(tmp_path, "python3", "exec sleep 60\n")
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        Local("hang", python=fake, connect_timeout=1).call(rh.add, 1, 1)
    assert "did not start within 1" in str(info.value)
    assert time.monotonic() - started < 6


def test_call_on_bad_arguments(no_leaks):
    """Bad tunnel options and non-callables are refused with clear errors."""
    with pytest.raises(ValueError):
        Local("")
    with pytest.raises(ValueError):
        Local("x", connect_timeout=0)
    with pytest.raises(TypeError):
        Local("x").call(42)


def test_calls_on_a_tunnel_in_another_tunnel_are_independent(no_leaks):
    """Two tunnels are separate processes; closing one leaves the other working."""
    with Local("one") as one, Local("two") as two:
        assert one.call(rh.getpid) != two.call(rh.getpid)
        one.close()
        assert two.call(rh.add, 1, 2) == 3


def test_several_greenlets_waiting_on_one_future(local):
    """Every greenlet waiting on the same future wakes when it resolves."""
    future = local.call_async(rh.sleep_and_return, 0.2, "done")
    waiters = [gevent.spawn(future.result) for _ in range(4)]
    gevent.joinall(waiters, timeout=10)
    assert [w.value for w in waiters] == ["done"] * 4


def test_timeout_covers_a_send_the_agent_never_reads(local):
    """A call whose arguments the agent never reads (it is stopped) times out, and close() works."""
    import signal
    local.connect()
    pid = local.remote_info["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(CallTimeout):
            local.call(rh.echo, b"x" * (4 << 20), timeout=1)
        assert time.monotonic() - started < 5
    finally:
        os.kill(pid, signal.SIGCONT)
    started = time.monotonic()
    local.close()
    assert time.monotonic() - started < 10
    assert local.call(rh.add, 1, 2) == 3


def test_odd_strings_survive(local, tmp_path):
    """Non-UTF-8 file names and lone surrogates in error messages do not break the agent."""
    name = os.fsdecode(b"caf\xe9")
    (tmp_path / name).write_text("x")
    assert local.call(os.listdir, str(tmp_path)) == [name]
    with pytest.raises(RemoteException) as info:
        local.call(eval, "(_ for _ in ()).throw(ValueError('bad \\ud800 name'))")
    assert info.value.type_name == "ValueError"
    assert local.call(rh.add, 1, 1) == 2


def test_arguments_over_the_message_limit_are_refused_before_sending(local, monkeypatch):
    """Arguments too large for one message raise SerializationError; nothing is sent."""
    from chopsticks.wire import protocol
    monkeypatch.setattr(protocol, "MAX_MESSAGE", 1 << 20)
    with pytest.raises(SerializationError) as info:
        local.call(rh.echo, b"x" * (2 << 20))
    assert "limit" in str(info.value)
    assert not local.connected


def test_close_while_connecting(no_leaks):
    """close() during a connect leaves no agent behind."""
    tunnel = Local("racing")
    job = gevent.spawn(tunnel.connect)
    gevent.sleep(0)
    tunnel.close()
    job.join(10)
    assert not tunnel.connected


def test_arguments_nested_deeper_than_the_agent_reads_by_name_still_arrive(local):
    """A named function's arguments nested past what the agent's msgpack reader takes (256
    levels) go pickled instead, and arrive whole."""
    from chopsticks.jobs import Call
    from chopsticks.wire import protocol

    nested = []
    for _ in range(300):
        nested = [nested]
    assert Call.of(json.dumps, (nested,)).kind == protocol.CALL
    assert Call.of(json.dumps, ([[1]],)).kind == protocol.CALL_NAMED
    assert local.call(json.dumps, nested) == json.dumps(nested)
