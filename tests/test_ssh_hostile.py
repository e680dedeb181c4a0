"""SSH peers that misbehave: junk, HTTP, floods. Every wait keeps its deadline; the hub stays free."""

import json
import os
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Generous: the machine is shared. A frozen hub never answers at all.
BOUND = 60


@pytest.fixture
def peer():
    """Starts hostile_ssh_peer.py in a mode; yields (process, port); stops it after the test."""
    started = []

    def start(mode):
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "hostile_ssh_peer.py"), mode],
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        return proc, int(proc.stdout.readline())

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _client(port, timeout):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "ssh_flood_client.py"), str(port), str(timeout)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))


def _report(client):
    try:
        out, _ = client.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait()
        pytest.fail("the controller did not come back within %d s (hub frozen inside libssh2?)" % BOUND)
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("mode,sent", [
    ("junk", "'xxxxxxxx"),
    ("lines", "'this is not ssh\\r\\n"),
    ("http", "'HTTP/1.1 400 Bad Request\\r\\n"),
])
def test_not_an_ssh_server(peer, mode, sent):
    """A peer that streams junk, text lines or HTTP is named 'not an SSH server' at once, quoting it."""
    _, port = peer(mode)
    report = _report(_client(port, 30))
    assert report["error"] == "ConnectError", report
    assert "127.0.0.1 port %d is not an SSH server: it sent %s" % (port, sent) in report["message"]
    assert len(report["message"]) < 300  # the quote is bounded
    assert ("looks like an HTTP server" in report["message"]) == (mode == "http")
    assert report["elapsed"] < 20


def test_a_failed_handshake_is_said_as_the_handshake(peer):
    """libssh2 failing the handshake (a packet longer than SSH allows) is a ConnectError that names
    the handshake and the address as what failed, not a channel."""
    _, port = peer("oversized")
    report = _report(_client(port, 30))
    assert report["error"] == "ConnectError", report
    assert report["message"].startswith("[127.0.0.1] the SSH handshake with 127.0.0.1 port %d failed: " % port)
    assert "channel" not in report["message"]


def test_flood_after_a_valid_banner_keeps_the_deadline_and_the_hub(peer):
    """Endless valid-looking packets after a real banner: ConnectTimeout on time; other greenlets run."""
    _, port = peer("flood")
    report = _report(_client(port, 3))
    assert report["error"] == "ConnectTimeout" and report["timeout"], report
    assert report["elapsed"] < 3 + 10
    # a tick every 50 ms: a hub held by libssh2 would show (almost) none
    assert report["ticks"] >= 20, report


def test_ctrl_c_interrupts_a_flooded_handshake(peer):
    """Ctrl-C ends a connect that a peer floods with packets, long before its timeout; the hub ran meanwhile."""
    proc, port = peer("flood")
    client = _client(port, 120)
    assert client.stdout.readline().strip() == "connecting"
    assert proc.stdout.readline().strip() == "flooding"  # the client is deep in the handshake
    client.send_signal(signal.SIGINT)
    report = _report(client)
    assert report.get("interrupted"), report
    assert report["elapsed"] < 60
    # old libssh2 loops let Ctrl-C through only when the flood paused; the hub was held between
    # (whole ticks: over a short interruption, a third of the ticks rounds down)
    assert report["ticks"] >= int(report["elapsed"] / 0.05 / 3), report
