"""Pushes through relays (``Group.put(..., relay=...)``): each chunk goes once to each host the
controller reaches directly, which passes it on. Against local chains and the loopback SSH
fleet, with a relay killed mid-push and a host that stops reading."""

import hashlib
import os
import signal

import pytest

import remote_helpers as rh
from chopsticks import relay_put
from chopsticks.errors import CallTimeout, TunnelClosed
from chopsticks.group import Group
from chopsticks.results import ErrorResult
from chopsticks.tunnel import Local, SSHTunnel


def written_by_me() -> int:
    """Bytes this process has written (to pipes and files), from /proc."""
    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["wchar"])


@pytest.fixture
def tree(no_leaks):
    """a; b and d through a; c through b."""
    a = Local("a")
    b = Local("b", via=a)
    c = Local("c", via=b)
    d = Local("d", via=a)
    try:
        yield [a, b, c, d]
    finally:
        for tunnel in (c, d, b, a):
            tunnel.close()


@pytest.fixture
def payload(tmp_path):
    data = os.urandom((6 << 20) + 4321)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    path.chmod(0o604)
    return str(path), data


def test_every_host_gets_the_file_and_the_controller_sends_it_once(tree, payload, tmp_path):
    """Through relays every host's copy is whole, with its mode, and the controller writes the
    file once, not once per host."""
    path, data = payload
    group = Group(tree)
    group.call(rh.getpid)  # connected: their starts are not counted
    before = written_by_me()
    result = group.put(path, str(tmp_path / "out-{host}.bin"), relay=True)
    sent = written_by_me() - before
    assert result.ok, result
    for host in ("a", "a -> b", "a -> b -> c", "a -> d"):
        assert (tmp_path / ("out-%s.bin" % host)).read_bytes() == data
        assert result[host]["sha256"] == hashlib.sha256(data).hexdigest()
        assert result[host]["size"] == len(data)
        assert oct((tmp_path / ("out-%s.bin" % host)).stat().st_mode & 0o777) == oct(0o604)
    assert sent < 1.3 * len(data), sent  # once, to a: not once per host
    before = written_by_me()
    assert Group(tree).put(path, str(tmp_path / "direct-{host}.bin")).ok
    assert written_by_me() - before > 3.5 * len(data)  # without relays, a's pipe carries all four
    assert not [name for name in os.listdir(tmp_path) if "chopsticks-part" in name]


def test_a_relay_that_is_not_in_the_group_passes_the_file_on(tree, payload, tmp_path):
    """An intermediate outside the group relays without a copy of its own."""
    path, data = payload
    a, b, c, d = tree
    result = Group([c, d]).put(path, str(tmp_path / "only-{host}.bin"), relay=True)
    assert result.ok, result
    assert sorted(os.listdir(tmp_path)) == sorted(["payload.bin", "only-a -> b -> c.bin", "only-a -> d.bin"])


def test_a_host_that_fails_its_copy_still_relays(tree, payload, tmp_path):
    """A host whose own copy fails still passes the file on."""
    path, data = payload
    a, b, c, d = tree
    (tmp_path / "x-a -> b").mkdir()  # b's target is a directory: its own copy fails
    result = Group([a, b, c]).put(path, str(tmp_path / "x-{host}"), relay=True)
    assert isinstance(result["a -> b"], ErrorResult) and "directory" in result["a -> b"].msg
    assert (tmp_path / "x-a -> b -> c").read_bytes() == data  # passed on by b all the same
    assert result["a"]["size"] == len(data)


def test_if_changed_through_relays_skips_the_hosts_that_have_the_file(tree, payload, tmp_path):
    """if_changed skips the hosts that have the file and relays to the rest."""
    path, data = payload
    a, b, c, d = tree
    first = Group([a, c]).put(path, str(tmp_path / "y-{host}"), relay=True, if_changed=True)
    assert first.ok and not first["a"]["skipped"] and not first["a -> b -> c"]["skipped"]
    again = Group([a, b, c]).put(path, str(tmp_path / "y-{host}"), relay=True, if_changed=True)
    assert again.ok, again
    assert [again[host]["skipped"] for host in ("a", "a -> b", "a -> b -> c")] == [True, False, True]
    assert (tmp_path / "y-a -> b").read_bytes() == data


def test_a_relay_killed_mid_push_fails_the_hosts_below_it_naming_it(tree, tmp_path):
    """A relay killed mid-push fails itself and the hosts below it, naming it; the others
    finish, and nothing is left over but the killed host's own part."""
    a, b, c, d = tree
    data = os.urandom(48 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    b_pid = b.call(rh.getpid)
    sent = []

    def progress(size):
        sent.append(size)
        if len(sent) == 40:  # ten pieces of 256 KiB in, to each of the four hosts
            os.kill(b_pid, signal.SIGKILL)
    result = Group(tree).put(str(path), str(tmp_path / "k-{host}.bin"), relay=True, progress=progress)
    assert result["a"]["size"] == len(data) and result["a -> d"]["size"] == len(data)
    for host in ("a -> b", "a -> b -> c"):
        assert isinstance(result[host], ErrorResult), result[host]
        assert isinstance(result[host].exception, TunnelClosed)
    assert "killed by signal 9" in result["a -> b"].msg
    assert "the tunnel through a -> b ended" in result["a -> b -> c"].msg
    assert (tmp_path / "k-a -> d.bin").read_bytes() == data
    leftovers = [name for name in os.listdir(tmp_path) if "chopsticks-part" in name]
    assert all(name.startswith(".k-a -> b.bin") for name in leftovers), leftovers  # only the killed host's own


def test_a_host_that_stops_reading_is_cut_and_the_others_finish(tree, payload, tmp_path, monkeypatch):
    """A host that stops reading is cut after STALL seconds with a CallTimeout; the rest finish."""
    path, data = payload
    monkeypatch.setattr(relay_put, "STALL", 1.0)
    a, b, c, d = tree
    c_pid = c.call(rh.getpid)
    os.kill(c_pid, signal.SIGSTOP)
    try:
        result = Group(tree).put(path, str(tmp_path / "s-{host}.bin"), relay=True)
    finally:
        os.kill(c_pid, signal.SIGCONT)
    assert isinstance(result["a -> b -> c"], ErrorResult)
    assert isinstance(result["a -> b -> c"].exception, CallTimeout)
    assert "cut from its relay tree" in result["a -> b -> c"].msg
    for host in ("a", "a -> b", "a -> d"):
        assert result[host]["size"] == len(data), result[host]


@pytest.mark.parametrize("options, message", [
    (dict(relay=0), "an int from 2"),
    (dict(relay=1), "an int from 2"),
    (dict(relay="2"), "an int from 2"),
    (dict(relay=2, sessions=2), "do not go together"),
    (dict(relay=2), "builds a tree of SSH hosts"),
])
def test_bad_relay_options_are_refused_before_anything_starts(options, message, payload):
    """Bad relay= values and combinations raise ValueError before anything starts."""
    path, _ = payload
    with pytest.raises(ValueError, match=message):
        Group([Local("x"), Local("y")]).put(path, "/nonexistent/{host}", **options)


def test_a_directory_is_refused(tmp_path):
    """relay= sends one file: a directory is refused."""
    with pytest.raises(ValueError, match="one file"):
        Group([Local("x")]).put(str(tmp_path), "/nonexistent", relay=True)


# -- a tree of degree N over the SSH fleet -------------------------------------------------------

def test_relay_degree_two_over_the_fleet(fleet, ssh_options, payload, tmp_path, no_leaks):
    """relay=2 over six SSH hosts: two direct, four reached by their relays' ssh."""
    path, data = payload
    group = Group(fleet.hosts, options=ssh_options)  # six hosts: two direct, four through them
    try:
        result = group.put(path, str(tmp_path / "{host}.bin"), relay=2)
        assert result.ok, result
        assert sorted(result) == sorted(fleet.hosts)
        for host in fleet.hosts:
            assert (tmp_path / ("%s.bin" % host)).read_bytes() == data
    finally:
        group.close()


def test_the_cli_pushes_through_relays(fleet, payload, tmp_path):
    """fanout put --relay over the fleet, and its bad input as one line, exit status 2."""
    from test_fanout import fanout, records, ssh_args
    path, data = payload
    result = fanout(*ssh_args(fleet), "-H", ",".join(fleet.hosts), "put", path, str(tmp_path / "cli-{host}"),
                    "--relay", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(records(result)) == sorted(fleet.hosts)
    assert all((tmp_path / ("cli-%s" % host)).read_bytes() == data for host in fleet.hosts)
    bad = fanout("--transport", "local", "-H", "a", "put", path, "/tmp/x", "--relay", "2")
    assert bad.returncode == 2 and "--relay is for SSH hosts" in bad.stderr
    bad = fanout("-H", "a", "put", str(tmp_path), "/tmp/x", "--relay", "2")
    assert bad.returncode == 2 and "is a directory" in bad.stderr
    for degree in ("0", "1"):
        bad = fanout("-H", "a", "put", path, "/tmp/x", "--relay", degree)
        assert bad.returncode == 2 and "--relay" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_ssh_tunnel_through_a_relay_is_named_by_its_group_host(fleet, ssh_options):
    """relay=N's tree: the first N direct, the rest breadth first under them."""
    tunnels, made = relay_put.tree_of([SSHTunnel(h, options=ssh_options) for h in fleet.hosts[:5]], 2)
    assert [t.host for t in tunnels[:2]] == fleet.hosts[:2]
    assert [t.via.name for t in made] == [fleet.hosts[0], fleet.hosts[0], fleet.hosts[1]]


def test_twenty_hosts_through_four_relays_one_killed_mid_push(tmp_path, no_leaks):
    """20 hosts: 4 reached directly, each relaying to 4 more. One relay is killed mid-push:
    it and its 4 fail naming it, the other 15 get the file whole, and the controller sends it
    about 4 times, not 20."""
    roots = [Local("r%d" % index) for index in range(4)]
    leaves = [Local("l%d" % index, via=roots[index // 4]) for index in range(16)]
    group = Group(roots + leaves)
    data = os.urandom(24 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    try:
        victim = roots[1].call(rh.getpid)
        group.call(rh.getpid)
        calls = []

        def progress(size):
            calls.append(size)
            if len(calls) == 20 * 8:  # eight pieces of 256 KiB to every host
                os.kill(victim, signal.SIGKILL)
        before = written_by_me()
        result = group.put(str(path), str(tmp_path / "t-{host}.bin"), relay=True, progress=progress)
        sent = written_by_me() - before
        failed = {host for host, _ in result.failures()}
        assert failed == {"r1"} | {"r1 -> l%d" % index for index in range(4, 8)}, failed
        for host in failed - {"r1"}:
            assert "the tunnel through r1 ended" in result[host].msg
        for host, value in result.successful():
            assert (tmp_path / ("t-%s.bin" % host)).read_bytes() == data
        assert len(list(result.successful())) == 15
        assert sent < 4.5 * len(data), sent
    finally:
        group.close()
