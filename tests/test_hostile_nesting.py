"""Remote code gets from the controller only the tunnels nesting allows, and a hostile
intermediate breaks only the tunnels through it.

The hostile remote is a real agent in a subprocess, whose code sends the tunnel requests it
crafts rather than those ``agent.nested`` sends (``hostile_nesting_remote``); for relayed
pipes, a real agent whose relay lies as a script says (the same file, run as an
intermediate tunnel's ``python``).
"""

import gc
import json
import os
import sys
import time
import tracemalloc

import gevent
import pytest

import hostile_nesting_remote as hnr
import remote_helpers as rh
from chopsticks import nesting
from chopsticks.nesting import BACKLOG as NESTED_BACKLOG, BYTES as NESTED_BYTES
from chopsticks.wire import protocol
from chopsticks.containers import Docker
from chopsticks.errors import ConnectTimeout, ContainerError, ProtocolViolation, TunnelClosed
from chopsticks.tunnel import Local

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1 << 20


@pytest.fixture
def tunnels(no_leaks):
    """Keeps the tunnels a test makes, and closes them (last first) after it."""
    made = []

    def keep(tunnel):
        made.append(tunnel)
        return tunnel
    yield keep
    for tunnel in reversed(made):
        tunnel.close()


@pytest.fixture
def built(monkeypatch):
    """One "looked up" each time the controller looked up the tunnel classes, to build one
    for remote code."""
    lookups = []
    classes = nesting._classes

    def spy():
        lookups.append("looked up")
        return classes()
    monkeypatch.setattr(nesting, "_classes", spy)
    return lookups


@pytest.fixture
def intermediate(tmp_path, tunnels):
    """A tunnel whose agent is real but whose relay lies as ``script`` says (see
    ``hostile_nesting_remote``), named ``mid``."""
    def make(**script):
        (tmp_path / "relay.json").write_text(json.dumps(script))
        wrapper = tmp_path / "python-mid"
        wrapper.write_text("#!/bin/sh\nPYTHONPATH=%s exec %s %s %s \"$@\"\n" % (
            ROOT, sys.executable, os.path.join(HERE, "hostile_nesting_remote.py"), tmp_path / "relay.json"))
        wrapper.chmod(0o755)
        return tunnels(Local("mid", python=str(wrapper)))
    return make


# -- what may be opened -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["Popen", "BaseTunnel", "SubprocessTunnel", "../x", "local", 5, None])
def test_a_kind_outside_the_set_closes_the_tunnel_and_builds_nothing(tunnels, built, kind):
    """An open of any kind but Local, Sudo, Docker or SSHTunnel is a protocol violation;
    no tunnel class is even looked up."""
    outer = tunnels(Local("outer"))
    with pytest.raises(ProtocolViolation) as info:
        outer.call(hnr.ask, ["open", kind, "x", {}], 5.0, timeout=20)
    assert "malformed tunnel request" in str(info.value)
    assert outer.closed and built == []


REFUSED_OPTIONS = [
    ("Local", {"serve": ["secret_nesting"]}),
    ("Local", {"modules": "chopsticks"}),
    ("Local", {"via": "outer"}),
    ("Local", {"tunnel_options": {"serve": ["secret_nesting"]}}),
    ("Local", {"depth": 0}),
    ("SSHTunnel", {"password": "hunter2"}),
    ("SSHTunnel", {"passphrase": "hunter2"}),
    ("SSHTunnel", {"handshake_slots": 1}),
    ("SSHTunnel", {"options": {"port": 22}}),
    ("SSHTunnel", {"port": "22; rm -rf ~"}),
    ("SSHTunnel", {"port": True}),
    ("SSHTunnel", {"key": 5}),
    ("SSHTunnel", {"key": ["~/.ssh/id", 5]}),
    ("SSHTunnel", {"sudo": 1}),
    ("Docker", {"engine_args": [1]}),
    ("Docker", {"engine_args": "--privileged"}),
    ("Docker", {"rm": 0}),
    ("Docker", {"user": "root"}),
    ("Sudo", {"user": ["root"]}),
    ("Local", {"python": b"/bin/sh"}),
    ("Local", {"connect_timeout": "1"}),
    ("Local", {"max_result": 1.5}),
]


def test_options_a_kind_does_not_take_or_of_the_wrong_type_are_refused_and_start_nothing(tunnels, built):
    """Import-service, secret, routing and SSH-client options, and options of the wrong type,
    come back to the remote as TypeError naming the option; nothing is built or started."""
    outer = tunnels(Local("outer"))
    report = outer.call(hnr.ask_each, [["open", kind, "x", options] for kind, options in REFUSED_OPTIONS],
                        timeout=30)
    for (kind, options), answer in zip(REFUSED_OPTIONS, report["answers"]):
        assert answer[:2] == [False, "TypeError"], (kind, options, answer)
        assert answer[2].startswith("%s opened from remote code" % kind), (kind, options, answer)
        assert repr(next(iter(options))) in answer[2], (kind, options, answer)
    assert report["children"] == [] and built == []
    assert outer.call(rh.add, 1, 2) == 3  # a refusal is an answer: the tunnel goes on


def test_seconds_no_clock_can_take_are_refused(tunnels, built):
    """A connect timeout or a call's timeout past what a float holds (an int of any size
    arrives), infinite or NaN comes back to the remote as an error; nothing starts, and
    the controller is not left with a failed greenlet and a half-started tunnel."""
    outer = tunnels(Local("outer"))
    payload = hnr.call_by_name("os", "getpid", [])
    report = outer.call(hnr.open_then, [
        ["open", "Local", "x", {"connect_timeout": 10 ** 400}],
        ["open", "Local", "x", {"connect_timeout": float("inf")}],
        ["open", "Local", "x", {"connect_timeout": float("nan")}],
        ["call", 1, payload, None, 10 ** 400],
        ["call", 1, payload, None, float("inf")],
        ["call", 1, payload, None, float("nan")],
    ], timeout=60)
    answers = report["answers"]
    for answer in answers[:3]:
        assert answer[:2] == [False, "TypeError"] and "'connect_timeout' cannot be" in answer[2], answer
    for answer in answers[3:]:
        assert answer == [False, "ValueError", "a call's timeout must be a finite number of seconds"], answer
    assert len(report["children"]) == 1 and built == ["looked up"]  # the one opened first
    assert outer.call(rh.add, 1, 2) == 3


@pytest.mark.parametrize("request_", [
    ["open", "Local", "x", ["python", "/bin/sh"]],
    ["open", "Local", "x", None],
    ["open", "Local", 5, {}],
    ["open", "Local", "x"],
    ["open", "Local", "x", {}, "extra"],
])
def test_an_open_that_no_agent_would_send_closes_the_tunnel(tunnels, built, request_):
    """Options that are not a dict, a name that is not a string, or the wrong number of
    fields: a protocol violation, before anything is built."""
    outer = tunnels(Local("outer"))
    with pytest.raises(ProtocolViolation):
        outer.call(hnr.ask, request_, 5.0, timeout=20)
    assert built == []


SECRET = "secret-%s" % os.urandom(8).hex()


@pytest.fixture
def secret_module(tmp_path, monkeypatch):
    """A module on the controller's sys.path, never imported there, holding a secret."""
    (tmp_path / "secret_nesting.py").write_text("def reveal():\n    return %r\n" % SECRET)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "secret_nesting" not in sys.modules


def test_a_remote_cannot_get_a_module_the_controller_does_not_serve(tunnels, secret_module):
    """Neither ``serve=`` nor a call that names the module (to be sent along, or imported
    there) gets its source to a tunnel opened by remote code."""
    outer = tunnels(Local("outer"))
    payload = hnr.call_by_name("secret_nesting", "reveal", [])
    report = outer.call(hnr.open_then, [
        ["open", "Local", "served", {"serve": ["secret_nesting"]}],
        ["call", 1, payload, "secret_nesting", None],
        ["call", 1, payload, "secret_nesting.reveal", None],
    ], timeout=30)
    assert report["opened"][0] is True
    refused, *calls = report["answers"]
    assert refused[:2] == [False, "TypeError"]
    for answer in calls:
        assert answer[:2] == [False, "RemoteException"], answer
        assert "does not serve secret_nesting" in answer[2], answer
    assert SECRET not in repr(report)


# -- how many at once -------------------------------------------------------------------------

def test_at_most_max_open_tunnels_are_open_at_once(tunnels):
    """The remote's 17th open fails with an error saying why; one closed makes room again."""
    outer = tunnels(Local("outer"))
    opens = [["open", "Local", "n%d" % index, {}] for index in range(nesting.MAX_OPEN + 1)]
    report = outer.call(hnr.ask_each, opens + [["close", 3], ["open", "Local", "again", {}]], timeout=60)
    answers = report["answers"]
    assert [answer[0] for answer in answers[:nesting.MAX_OPEN]] == [True] * nesting.MAX_OPEN
    assert answers[nesting.MAX_OPEN][:2] == [False, "ChopsticksError"]
    assert "at most %d tunnels" % nesting.MAX_OPEN in answers[nesting.MAX_OPEN][2]
    assert answers[-2] == [True, "NoneType", None] and answers[-1][0] is True
    assert len(report["children"]) == nesting.MAX_OPEN


def test_opens_under_way_count_against_max_open(tunnels):
    """Opens sent all at once, none finished before the others are checked, still get no
    more than MAX_OPEN tunnels; the rest are told why."""
    outer = tunnels(Local("outer"))
    opens = [["open", "Local", "n%d" % index, {}] for index in range(nesting.MAX_OPEN + 8)]
    answers = outer.call(hnr.ask_at_once, opens, timeout=60)
    assert [answer[0] for answer in answers].count(True) == nesting.MAX_OPEN
    for answer in answers:
        assert answer[0] is True or "at most %d tunnels" % nesting.MAX_OPEN in answer[2], answer


def test_a_flood_of_unanswered_requests_closes_the_tunnel_and_leaves_nothing(tunnels):
    """More than NESTED_BACKLOG requests waiting for an answer at once is a protocol
    violation: the tunnel and the tunnels opened through it close, no greenlet is left."""
    outer = tunnels(Local("outer"))
    with pytest.raises(ProtocolViolation) as info:
        outer.call(hnr.open_and_flood, NESTED_BACKLOG + 1, 10.0, timeout=30)
    assert "more than %d tunnel requests unanswered" % NESTED_BACKLOG in str(info.value)
    assert outer.closed


def test_requests_too_big_or_too_many_bytes_at_once_close_the_tunnel(tunnels):
    """One request past MAX_TUNNEL_REQUEST, or more than NESTED_BYTES of requests held at once
    (each answer keeps its call's bytes until the call returns): a protocol violation, so one
    host cannot make the controller hold gigabytes."""
    outer = tunnels(Local("outer"))
    with pytest.raises(ProtocolViolation, match="over its %d-byte limit" % protocol.MAX_TUNNEL_REQUEST):
        outer.call(hnr.open_and_flood_bytes, 1, protocol.MAX_TUNNEL_REQUEST + 1, 10.0, timeout=30)
    assert outer.closed
    again = tunnels(Local("again"))
    per_call = protocol.MAX_TUNNEL_REQUEST - (1 << 20)
    with pytest.raises(ProtocolViolation, match="more than %d bytes of tunnel requests unanswered" % NESTED_BYTES):
        again.call(hnr.open_and_flood_bytes, NESTED_BYTES // per_call + 1, per_call, 10.0, timeout=60)


# -- calls and closes -------------------------------------------------------------------------

@pytest.mark.parametrize("request_", [
    ["call", 99, b"x", None, None],
    ["close", 99],
    ["call", 0, b"x", None, None],
    ["call", -1, b"x", None, None],
    ["call", "1", b"x", None, None],
    ["call", 1.0, b"x", None, None],
    ["call", True, b"x", None, None],
    ["close", True],
    ["close", [1]],
    ["call", 1, "not bytes", None, None],
    ["call", 1, [1, 2], None, None],
    ["call", 1, b"x", 5, None],
    ["call", 1, b"x", None, "soon"],
    ["call", 1, b"x", None, True],
    ["call", 1, b"x"],
    ["close"],
    ["close", 1, 2],
    [],
    "call",
    {"op": "call"},
    ["nonsense", 1],
], ids=repr)
def test_a_call_or_close_no_agent_would_send_closes_the_tunnel(tunnels, request_):
    """A tunnel id never opened or not an int (``True`` and ``1.0`` included, though tunnel 1
    is open), a payload that is not bytes, a module or timeout of the wrong type, the wrong
    number of fields: each is a protocol violation."""
    outer = tunnels(Local("outer"))
    with pytest.raises(ProtocolViolation):
        outer.call(hnr.open_then, [request_], None, 5.0, timeout=30)
    assert outer.closed


# -- how deep ---------------------------------------------------------------------------------

def test_remote_code_cannot_nest_deeper_than_the_limit_whatever_it_sends(tunnels, built):
    """Code on a tunnel remote code opened (depth 2) is refused any further tunnel with
    DepthLimitExceeded, whatever it asks; its depth option is no option; nothing starts."""
    outer = tunnels(Local("outer"))
    deep = [["open", "Local", "deeper", {}], ["open", "Sudo", "deeper", {"user": "root"}],
            ["open", "SSHTunnel", "localhost", {}], ["open", "Local", "deeper", {"depth": 0}]]
    (report, outer_children) = outer.call(hnr.from_nested, "ask_each", deep, timeout=30)
    answers = report["answers"]
    for answer in answers[:3]:
        assert answer[:2] == [False, "DepthLimitExceeded"], answer
        assert "Depth limit of 2 exceeded at outer -> deeper" in answer[2]
    assert answers[3][:2] == [False, "TypeError"]
    assert report["children"] == [] and len(outer_children) == 1
    assert built == ["looked up"]  # the depth-2 tunnel itself


# -- a hostile intermediate -------------------------------------------------------------------

def test_an_intermediate_sending_past_its_credit_fails_the_tunnels_through_it(intermediate, tunnels, tmp_path):
    """An intermediate that reads none of the credit it is given (the controller's writes to
    it block) and sends a relayed pipe's stdout on regardless: past the credit its tunnel
    closes with ProtocolViolation, and the far tunnel's call fails with TunnelClosed naming
    the intermediate and why."""
    stopped = tmp_path / "stopped-reading"
    mid = intermediate(relay="overflow", stopped_reading=str(stopped))
    far = tunnels(Local("far", via=mid))
    assert far.call(rh.echo, "through") == "through"
    marked = gevent.spawn(far.call, rh.echo, hnr.MARKER, timeout=20)
    with gevent.Timeout(20):
        while not stopped.exists():
            gevent.sleep(0.01)
    # the first call is read whole (then its reader stops), the second fills the pipe
    filling = [gevent.spawn(mid.call, rh.echo, b"\0" * MiB, timeout=20) for _ in range(2)]
    with pytest.raises(TunnelClosed) as info:
        marked.get()
    assert str(info.value).startswith("[mid -> far] the tunnel through mid ended")
    assert "broke the protocol (stream 2 sent more than its credit)" in str(info.value)
    for call in filling:
        with pytest.raises(ProtocolViolation):
            call.get()
    assert mid.closed


def test_an_intermediate_sending_on_a_stream_never_opened_fails_the_tunnels_through_it(intermediate, tunnels):
    """Data for a stream never opened: the intermediate's tunnel closes with
    ProtocolViolation, the far tunnel's call fails with TunnelClosed saying so; the
    intermediate reconnects, and other tunnels go on."""
    mid = intermediate(relay="unopened")
    far = tunnels(Local("far", via=mid))
    assert far.call(rh.echo, "through") == "through"
    with pytest.raises(TunnelClosed) as info:
        far.call(rh.echo, hnr.MARKER, timeout=20)
    assert str(info.value).startswith("[mid -> far] the tunnel through mid ended")
    assert "broke the protocol (data for stream 999, which was never opened)" in str(info.value)
    assert mid.closed
    with Local("bystander") as bystander:
        assert bystander.call(rh.add, 2, 3) == 5
    assert mid.call(rh.add, 1, 2) == 3  # a new agent


@pytest.mark.parametrize("status", [
    {"status": "3; rm -rf ~"}, {"status": 3.0}, {"status": True}, {"status": [3]}, {"status": {"status": 3}},
    {"status": 1, "times_ten_to": 5000}, {"status": -1, "times_ten_to": 5000},
], ids=repr)
def test_an_exit_status_no_process_has_is_ignored(intermediate, tunnels, status):
    """A relay that says its command exited with anything but an int, or an int no exit status
    or signal is (one past what Python prints among them): the status is ignored, and the far
    tunnel's end is still a TunnelClosed naming the path; the intermediate goes on."""
    mid = intermediate(relay="status", **status)
    far = tunnels(Local("far", via=mid))
    with pytest.raises(TunnelClosed) as info:
        far.call(rh.hard_exit, 3, timeout=20)
    assert str(info.value).startswith("[mid -> far] the agent exited with status None")
    assert mid.call(rh.add, 1, 2) == 3


def test_a_far_start_that_does_not_name_an_engine_fails(intermediate, tunnels):
    """A container engine that is not a name, from the intermediate: the start fails clearly."""
    mid = intermediate(relay="engine", engine=["docker", "--privileged"])
    with pytest.raises(ContainerError) as info:
        tunnels(Docker("box", via=mid)).connect()
    assert "mid named no container engine" in str(info.value)
    assert mid.call(rh.add, 1, 2) == 3


def test_an_intermediate_that_never_names_its_engine_times_the_start_out(intermediate, tunnels):
    """A container tunnel through an intermediate that never says which engine it has fails
    with ConnectTimeout within its connect timeout; the intermediate goes on."""
    mid = intermediate(relay="engine", engine="docker", sleep=60)
    box = tunnels(Docker("box", via=mid, connect_timeout=1))
    with gevent.Timeout(15), pytest.raises(ConnectTimeout) as info:  # else it waits the minute out
        box.connect()
    assert str(info.value) == "[mid -> box] mid did not name its container engine in time"
    assert mid.call(rh.add, 1, 2) == 3


# -- how big a result -------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{"max_result": 1 << 40}, {}], ids=["asked", "default"])
def test_a_tunnel_remote_code_opens_returns_no_more_than_its_own(tunnels, options):
    """Asking for a max_result larger than the requesting tunnel's, or for none (the default
    is larger), gets the requesting tunnel's."""
    outer = tunnels(Local("outer", max_result=MiB))
    big = hnr.call_by_name("os", "urandom", [2 * MiB])
    report = outer.call(hnr.open_then, [["call", 1, big, None, None]], options, timeout=30)
    assert report["opened"][0] is True
    answer = report["answers"][0]
    assert answer[:2] == [False, "ResultTooLarge"], answer
    assert "over the tunnel's max_result of %d bytes" % MiB in answer[2]


# -- the names of modules sent along with a call ----------------------------------------------

def test_a_module_name_made_to_be_slow_does_not_stall_the_controller(tunnels):
    """A call naming a module of sixty thousand dotted parts is answered at the cost of any
    call: the controller does not look them up one prefix at a time (its hub stood still
    while it did, for some 10 s of CPU)."""
    outer = tunnels(Local("outer"))
    payload = hnr.call_by_name("os", "getpid", [])
    outer.call(hnr.open_then, [], timeout=30)
    cpu = time.process_time()  # the controller's own: a loaded machine does not inflate it
    report = outer.call(hnr.ask_each, [["call", 1, payload, "a." * 60000 + "a", None]], timeout=300)
    cpu = time.process_time() - cpu
    assert report["answers"][0][:2] == [True, "int"]
    assert cpu < 2.0, "the controller spent %.1f s of CPU on one call" % cpu


def test_module_names_a_remote_makes_up_are_not_kept(tunnels):
    """Calls naming a new module under a package the controller serves, each time, keep no
    copy of that package's sources per name: the controller's memory stays flat."""
    outer = tunnels(Local("outer"))
    payload = hnr.call_by_name("os", "getpid", [])
    made_up = ["chopsticks.connection.made_up_%d" % index for index in range(17)]
    outer.call(hnr.open_then, [["call", 1, payload, made_up[0], None]], timeout=30)  # sources read once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        report = outer.call(hnr.ask_each, [["call", 1, payload, name, None] for name in made_up[1:]], timeout=60)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [answer[:2] for answer in report["answers"]] == [[True, "int"]] * 16
    assert kept < 2 * MiB, "%.1f MiB kept" % (kept / MiB)
