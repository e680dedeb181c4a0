"""A hostile remote cannot run code on the controller, read its files, or hurt other tunnels.

Each scenario is a real subprocess that speaks the protocol with crafted frames.
"""

import os
import sys
import tracemalloc

import gevent
import pytest

import remote_helpers as rh
from chopsticks import ChopsticksError, ProtocolViolation, SerializationError
from chopsticks.wire import protocol
from chopsticks.tunnel import Local

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture
def hostile(tmp_path, no_leaks):
    """Makes a tunnel whose 'python' is the hostile agent playing one scenario."""
    marker = tmp_path / "pwned"
    tunnels = []

    def make(scenario, **options):
        wrapper = tmp_path / ("python-" + scenario)
        wrapper.write_text("#!/bin/sh\nPYTHONPATH=%s:%s exec %s %s %s %s\n" % (
            ROOT, HERE, sys.executable, os.path.join(HERE, "hostile_agent.py"), scenario, marker))
        wrapper.chmod(0o755)
        tunnel = Local("evil-" + scenario, python=str(wrapper), **options)
        tunnels.append(tunnel)
        return tunnel

    yield make
    for tunnel in tunnels:
        tunnel.close()
    assert not marker.exists(), "the hostile remote ran code on the controller"


@pytest.mark.parametrize("scenario", ["pickle_result", "pickle_error", "pickle_in_ext", "unknown_ext", "bomb"])
def test_undecodable_results_fail_the_call_and_run_nothing(hostile, scenario):
    """Pickles or unknown types where a result should be fail that call; nothing is unpickled."""
    tunnel = hostile(scenario)
    with pytest.raises(SerializationError) as info:
        tunnel.call(rh.add, 1, 2)
    assert "could not be decoded" in str(info.value)


@pytest.mark.parametrize("scenario, options", [
    ("oversized_frame", {}),
    ("endless_message", {"max_result": 1 << 20}),
    ("garbage", {}),
    ("unknown_kind", {}),
    ("request_flood", {}),
])
def test_protocol_violations_close_that_tunnel_only(hostile, scenario, options):
    """Oversized frames, endless messages, garbage and unknown kinds close the tunnel cleanly."""
    tunnel = hostile(scenario, **options)
    with Local("bystander") as bystander:
        with pytest.raises(ProtocolViolation) as info:
            tunnel.call(rh.add, 1, 2, timeout=30)
        assert isinstance(info.value, ConnectionError)
        assert "broke the protocol" in str(info.value)
        assert tunnel.closed
        assert bystander.call(rh.add, 2, 3) == 5


def test_a_bomb_does_not_blow_up_controller_memory(hostile):
    """A small result that would unfold into millions of objects is refused, memory stays flat."""
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SerializationError) as info:
        hostile("bomb").call(rh.add, 1, 2)
    assert "bomb" in str(info.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


# What a compromised host can make the controller allocate, at most, per tunnel, in units of
# its max_result: the worst is a result of the densest values the codec accepts (measured
# 52x: one-element lists of an int that is not a cached small int).
MEMORY_FACTOR = 64


@pytest.mark.parametrize("scenario", ["hello_bomb", "fat_requests", "tiny_partials", "worst_result"])
def test_controller_memory_stays_within_its_bound_whatever_the_remote_sends(hostile, scenario):
    """A HELLO bomb, fat import requests, a million unfinished messages or the densest result:
    the controller allocates under MEMORY_FACTOR x max_result, and only a valid result is accepted."""
    max_result = 1 << 20
    tunnel = hostile(scenario, max_result=max_result)
    outcome = None
    tracemalloc.start()
    try:
        try:
            outcome = tunnel.call(rh.add, 1, 2, timeout=30)
        except ChopsticksError as exc:
            outcome = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_FACTOR * max_result, "%s: peak %.1f MiB" % (outcome, peak / (1 << 20))
    if scenario == "worst_result":
        assert isinstance(outcome, list) and outcome[0] == [-20]
    else:
        assert isinstance(outcome, ProtocolViolation), outcome
        assert "limit" in str(outcome)


def test_stray_results_are_ignored(hostile):
    """A result for a request the controller never made is dropped; the real one arrives."""
    assert hostile("stray_result").call(rh.add, 1, 2) == "ok"


def test_import_and_data_requests_cannot_escape(hostile):
    """Path traversal, absolute paths, stdlib and junk requests all come back refused."""
    answers = hostile("probe").call(rh.add, 1, 2, timeout=60)
    assert len(answers) == 13
    for request, reply in answers.items():
        assert "root:" not in reply and "setup(" not in reply, (request, reply)
        if request.startswith("data"):
            assert reply.startswith("[False"), (request, reply)
        else:
            assert reply == "[]", (request, reply)


SECRET = "hunter2-" + os.urandom(8).hex()


@pytest.fixture
def secrets_on_path(tmp_path, monkeypatch):
    """A module and a package with a secret, in the controller's cwd and on its sys.path,
    never imported by the controller."""
    where = tmp_path / "cwd"
    (where / "secret_pkg").mkdir(parents=True)
    (where / "secret_settings.py").write_text("PASSWORD = %r\n" % SECRET)
    (where / "secret_pkg" / "__init__.py").write_text("PASSWORD = %r\n" % SECRET)
    (where / "secret_pkg" / "creds.py").write_text("PASSWORD = %r\n" % SECRET)
    (where / "secret_pkg" / "creds.txt").write_text(SECRET)
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.chdir(where)
    return where


def test_modules_the_controller_never_imported_are_not_served(hostile, secrets_on_path, tmp_path):
    """A remote asking for secret modules or data on the controller's path is refused, told how
    to allow them, and no byte of them reaches it."""
    answers = hostile("probe_secrets").call(rh.add, 1, 2, timeout=60)
    assert len(answers) == 4
    for request, (kind, reply) in answers.items():
        if "creds.txt" in request:
            assert kind == protocol.DATA and reply[0] is False, (request, reply)
            message = reply[1]
        else:
            assert kind == protocol.REFUSED, (request, reply)
            message = reply
        assert "does not serve" in message and "serve=['secret_" in message, (request, message)
    received = (tmp_path / "pwned.received").read_bytes()
    assert SECRET.encode() not in received


def test_a_remote_cannot_stream_past_its_credit(hostile, tmp_path):
    """A fetch whose remote sends more than the credit it was given is cut off; nothing is left."""
    tunnel = hostile("stream_flood")

    class SlowSink:  # the controller falls behind: what arrives must stay within the credit
        written = 0

        def write(self, data):
            self.written += len(data)
            gevent.sleep(0.2)

    sink = SlowSink()
    with pytest.raises(ProtocolViolation) as info:
        tunnel.fetch("/etc/hostname", sink, timeout=30)
    assert "more than its credit" in str(info.value)
    assert sink.written < protocol.STREAM_WINDOW


@pytest.mark.parametrize("scenario, message", [("stream_unopened", "never opened"), ("bad_credit", "bad credit")])
def test_stream_frames_for_no_stream_or_with_bad_credit_close_the_tunnel(hostile, scenario, message):
    tunnel = hostile(scenario)
    if scenario == "bad_credit":  # credit for a stream being sent: open one with a put
        source = os.path.join(HERE, "remote_helpers.py")
        with pytest.raises(ProtocolViolation) as info:
            tunnel.put(source, "/nonexistent/never-written", timeout=30)
    else:
        with pytest.raises(ProtocolViolation) as info:
            tunnel.call(rh.add, 1, 2, timeout=30)
    assert message in str(info.value)
