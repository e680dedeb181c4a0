"""The rest of the original's API, against real tunnels: Queue.put/fetch/connect, operations
queued from callbacks during a run, RemoteException's old home, the original's reprs, and
tunnels closed when dropped without close()."""

import gc
import os
import subprocess
import threading
import time
import weakref

import gevent
import pytest

import remote_helpers as rh
from conftest import IMAGES, podman_containers
from chopsticks import ErrorResult, Group, GroupResult, Queue
from chopsticks.tunnel import Docker, Local, SSHTunnel, Sudo, Tunnel


def _gone(pid, seconds=10.0):
    """Whether process ``pid`` (a child of ours: reaped by gevent) ends within ``seconds``."""
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        gevent.sleep(0.05)
    return False


@pytest.fixture
def pair(no_leaks):
    a, b = Local("qa"), Local("qb")
    yield a, b
    a.close()
    b.close()


# -- Queue.put, Queue.fetch, Queue.connect ----------------------------------------------------

def test_queue_put_call_fetch_run_in_each_hosts_fifo_order(pair, tmp_path):
    """A put, a call that reads what it put, and a fetch, queued on a Group, run in that order
    on each host; the values are GroupResults of the tunnel methods' dicts, {host} paths and all."""
    source = tmp_path / "conf.txt"
    source.write_bytes(b"setting = 1\n")
    remote = str(tmp_path / "remote-{host}.txt")
    queue = Queue()
    group = Group(list(pair))
    connected = queue.connect(group)
    put = queue.put(group, str(source), remote, 0o600)
    seen = queue.call(group, rh.file_sha256, str(tmp_path / "remote-qa.txt"))
    fetched = queue.fetch(group, str(tmp_path / "remote-qa.txt"), str(tmp_path / "back-{host}.txt"))
    one = queue.fetch(pair[1], remote.format(host="qb"))  # a tunnel's own: a temporary file
    queue.run()
    assert dict(connected.value) == {"qa": None, "qb": None}
    assert isinstance(put.value, GroupResult)
    for host in ("qa", "qb"):
        assert put.value[host]["remote_path"] == remote.format(host=host) and put.value[host]["size"] == 12
        assert os.stat(remote.format(host=host)).st_mode & 0o777 == 0o600
        assert (tmp_path / ("back-%s.txt" % host)).read_bytes() == b"setting = 1\n"
        assert fetched.value[host]["local_path"] == str(tmp_path / ("back-%s.txt" % host))
    assert seen.value["qa"] == put.value["qa"]["sha256"]  # the call ran after the put
    assert open(one.value["local_path"], "rb").read() == b"setting = 1\n"
    os.unlink(one.value["local_path"])


def test_queue_put_of_a_missing_file_raises_and_loses_nothing(pair, tmp_path):
    """Queue.put of a missing file raises FileNotFoundError at once, queueing nothing; a bad
    fetch template is a ValueError; the queue's other operations still run."""
    queue = Queue()
    before = queue.call(pair[0], rh.add, 1, 2)
    with pytest.raises(FileNotFoundError):
        queue.put(Group(list(pair)), str(tmp_path / "missing.txt"), "/tmp/x")
    with pytest.raises(ValueError):
        queue.fetch(Group(list(pair)), "/etc/hostname", str(tmp_path / "same.txt"))
    with pytest.raises(TypeError):
        queue.put("qa", str(tmp_path))
    after = queue.call(pair[1], rh.add, 3, 4)
    queue.run()
    assert (before.value, after.value) == (3, 7)


def test_a_failed_put_or_fetch_is_a_value_and_the_host_goes_on(pair, tmp_path):
    """A fetch of a missing remote file, or a file deleted between queueing and running, gives
    an ErrorResult; the same host's next call runs."""
    source = tmp_path / "soon-gone.txt"
    source.write_text("x")
    queue = Queue()
    missing = queue.fetch(pair[0], str(tmp_path / "nowhere.txt"))
    gone = queue.put(pair[0], str(source), str(tmp_path / "copy.txt"))
    source.unlink()
    after = queue.call(pair[0], rh.echo, "still here")
    queue.run()
    assert isinstance(missing.value, ErrorResult) and isinstance(gone.value, ErrorResult)
    assert "soon-gone.txt" in gone.value.msg and after.value == "still here"


def test_queue_put_and_fetch_over_ssh(fleet, ssh_options, tmp_path, no_leaks):
    """Over SSH hosts of the loopback fleet: a queued put to two hosts, each to its own path
    from {host}, and a queued fetch from each into its own local path. (The fleet's hosts
    share one filesystem: each fetches a file that is there before the run, as a host's
    FIFO orders only its own operations.)"""
    group = Group(fleet.hosts[:2], options=ssh_options)
    try:
        source = tmp_path / "payload.bin"
        source.write_bytes(os.urandom(100000))
        queue = Queue()
        put = queue.put(group, str(source), str(tmp_path / "put-{host}.bin"))
        fetched = queue.fetch(group, str(source), str(tmp_path / "{host}.bin"))
        queue.run(timeout=30)
        put.value.raise_failures()
        fetched.value.raise_failures()
        for host in fleet.hosts[:2]:
            assert (tmp_path / ("put-%s.bin" % host)).read_bytes() == source.read_bytes()
            assert (tmp_path / (host + ".bin")).read_bytes() == source.read_bytes()
    finally:
        group.close()


def test_a_queued_job_that_cannot_go_to_the_shards_is_each_operations_failure(fleet, ssh_options, tmp_path,
                                                                              no_leaks):
    """A sharded Group whose queued put's file went before run(): every operation queued on
    its hosts gets the failure as its value (none is lost, no AsyncResult left unset), and
    run() returns."""
    group = Group(fleet.hosts[:2], options=ssh_options, workers=2)
    try:
        source = tmp_path / "gone.bin"
        source.write_bytes(b"x")
        queue = Queue()
        put = queue.put(group, str(source), str(tmp_path / "put-{host}.bin"))
        called = queue.call(group, rh.add, 1, 2)
        source.unlink()
        queue.run(timeout=30)
        for result in (put.value, called.value):
            assert sorted(result) == sorted(fleet.hosts[:2])
            assert all(isinstance(value, ErrorResult) and "gone.bin" in value.msg for value in result.values())
    finally:
        group.close()


# -- queued from a callback: run by the same run ----------------------------------------------

def test_operations_queued_from_callbacks_run_in_the_same_run(pair, tmp_path):
    """What callbacks queue while run() runs, on a busy host, on an idle one, on a new one, and
    a put, is run by that run, each host in FIFO order; the original's own test, too."""
    a, b = pair
    order = []
    queue = Queue()
    source = tmp_path / "f.txt"
    source.write_text("queued late")
    late = {}
    with Local("qc") as c:
        def first(value):
            order.append(("a", value))
            late["a"] = queue.call(a, rh.echo, "a2").with_callback(lambda v: order.append(("a", v)))
            late["c"] = queue.call(c, rh.echo, "c1").with_callback(lambda v: order.append(("c", v)))
            late["put"] = queue.put(b, str(source), str(tmp_path / "late.txt"))
            late["b"] = queue.call(b, rh.file_sha256, str(tmp_path / "late.txt"))

        queue.call(a, rh.sleep_and_return, 0.2, "a1").with_callback(first)
        queue.call(a, rh.echo, "a1b").with_callback(lambda v: order.append(("a", v)))
        queue.call(b, rh.echo, "b1")
        started = time.monotonic()
        queue.run()
        assert time.monotonic() - started < 5
        assert [v for h, v in order if h == "a"] == ["a1", "a1b", "a2"]
        assert late["c"].value == "c1" and late["b"].value == late["put"].value["sha256"]
        assert queue._fifos == {}  # nothing left for the next run


def test_a_callback_that_raises_keeps_what_is_left_for_the_next_run(pair):
    """A callback's exception ends the run; the host's later operations stay queued."""
    queue = Queue()
    queue.call(pair[0], rh.echo, 1).with_callback(lambda v: 1 / 0)
    later = queue.call(pair[0], rh.echo, 2)
    with pytest.raises(ZeroDivisionError):
        queue.run()
    assert not later.ready
    queue.run()
    assert later.value == 2


# -- names and reprs as the original's ---------------------------------------------------------

def test_remote_exception_and_error_result_import_from_the_tunnel_module():
    """`from chopsticks.tunnel import RemoteException` (and ErrorResult) work, as in the original."""
    from chopsticks.tunnel import ErrorResult as FromTunnel, RemoteException
    import chopsticks
    assert RemoteException is chopsticks.RemoteException and FromTunnel is chopsticks.ErrorResult


def test_reprs_are_the_originals(podman):
    """Tunnels show as `Docker('py36')`, Groups as `Group([Docker('py35'), Docker('py36')])`;
    an SSH tunnel's password is in neither."""
    assert repr(Docker("py36", engine=podman)) == "Docker('py36')"
    assert repr(Group([Docker("py35", engine=podman), Docker("py36", engine=podman)])) == \
        "Group([Docker('py35'), Docker('py36')])"
    assert repr(Local()) == "Local('localhost')" and repr(Sudo()) == "Sudo('root@localhost')"
    secret = SSHTunnel("db-1", user="deploy", port=2222, password="hunter2", ssh_config="")
    assert repr(secret) == "SSHTunnel('db-1')" and Tunnel is SSHTunnel
    assert "hunter2" not in repr(Group([secret])) and "hunter2" not in repr(secret.destination)
    big = repr(Group([Local("h%d" % i) for i in range(25)]))
    assert big.startswith("Group([Local('h0'), ") and big.endswith("Local('h19'), ... 5 more])")


# -- dropped without close(): closed --------------------------------------------------------

def test_a_dropped_tunnel_and_a_dropped_groups_tunnels_are_closed(no_leaks):
    """Deleting a connected Local, or a Group of them, without close() ends their agents' processes."""
    tunnel = Local("dropped")
    pid = tunnel.call(os.getpid)
    ref = weakref.ref(tunnel)
    del tunnel
    assert ref() is None and _gone(pid)
    group = Group([Local("g1"), Local("g2")])
    pids = list(group.call(os.getpid).values())
    del group
    assert all(_gone(pid) for pid in pids)
    closed = Local("closed")  # closed first: nothing is left to do when it goes
    closed.call(os.getpid)
    closed.close()
    del closed


def test_a_tunnel_collected_in_another_thread_is_closed_without_touching_its_hub(no_leaks):
    """A tunnel in a reference cycle collected by gc in another thread: the finalizer only
    signals its process there (never blocks, never raises), and its own hub reaps it."""
    tunnel = Local("cycle")
    pid = tunnel.call(os.getpid)
    tunnel.myself = tunnel
    ref = weakref.ref(tunnel)
    del tunnel
    errors = []
    thread = threading.Thread(target=lambda: errors.append(gc.collect()))
    thread.start()
    thread.join(5)
    assert ref() is None and errors and _gone(pid)


def test_a_dropped_container_tunnel_removes_its_container(podman, container_names):
    """A Docker tunnel deleted without close(): its container goes, as in the original."""
    name = container_names + "dropped"
    tunnel = Docker(name, image=IMAGES["3.11"], engine=podman)
    assert tunnel.call(rh.add, 1, 1) == 2
    del tunnel
    ends = time.monotonic() + 20
    while podman_containers(name) and time.monotonic() < ends:
        gevent.sleep(0.2)
    assert podman_containers(name) == []
    assert subprocess.run(["podman", "container", "exists", name]).returncode == 1
