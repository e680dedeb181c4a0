"""Shards: Group(workers=N) over real shard processes and the loopback sshd fleet."""

import json
import os
import select
import signal
import subprocess
import sys
import textwrap

import gevent
import gevent.event
import pytest

import remote_helpers as rh
from chopsticks import CallTimeout, ErrorResult, Group, GroupResult, Local, RemoteException, ShardLost
from chopsticks.shards.driver import count_workers, for_group, split
from chopsticks.transports.ssh import HandshakeSlots, default_slots
from fleet import shard_pids as fleet_shard_pids

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def shard_pids(pid=None):
    """The shard processes that process ``pid`` (default: this one) started."""
    return fleet_shard_pids(pid or os.getpid())


def wait_gone(pids, seconds=30):
    """Wait (on pidfds, no polling) until every process in ``pids`` has exited; the ones left."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            pass
    try:
        left = list(fds)
        while left:
            ready, _, _ = select.select(left, [], [], seconds)
            if not ready:
                break
            left = [fd for fd in left if fd not in ready]
        return len(left)
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def sharded(fleet, ssh_options, no_leaks):
    """The fleet's six hosts over two shard processes, closed (and leak-checked) after."""
    group = Group(fleet.hosts, options=ssh_options, workers=2)
    try:
        yield group
    finally:
        group.close()


def test_call_spreads_over_two_shard_processes_and_keeps_tunnels_open(sharded, fleet):
    """A sharded call gives every host's result in the group's order, from two shard
    processes, and the second call reaches the same remote agents (tunnels kept open)."""
    first = sharded.call(rh.getpid)
    assert isinstance(first, GroupResult) and list(first) == fleet.hosts and first.ok
    assert len(shard_pids()) == 2
    assert sharded.call(rh.getpid) == first
    assert len(shard_pids()) == 2


def test_iter_call_streams_as_each_host_finishes(sharded, tmp_path):
    """iter_call yields the hosts that finished while another (in either shard) still runs."""
    results = sharded.iter_call(rh.first_ones_fast, str(tmp_path), 5, seconds=60)
    fast = [next(results) for _ in range(5)]
    assert [value for _, value in fast] == ["fast"] * 5
    results.close()  # the slow host is stopped, not waited for


def test_closing_the_stream_cancels_and_the_group_stays_usable(sharded, tmp_path):
    """Closing iter_call early cancels every shard's run; the next call works at once."""
    release = tmp_path / "release"
    results = sharded.iter_call(rh.claim, str(tmp_path))
    next(results)
    results.close()
    stream = sharded.iter_call(rh.wait_for_file, str(release))
    release.touch()
    assert len(dict(stream)) == 6


def test_callback_filter_connect_and_set_operations(sharded, fleet):
    """callback, connect, filter and set operations work on a sharded group; derived groups
    share its shards (same remote agents)."""
    seen = []
    pids = sharded.call(rh.getpid, callback=lambda host, value: seen.append(host))
    assert sorted(seen) == sorted(fleet.hosts)
    assert sharded.connect() == GroupResult((host, None) for host in fleet.hosts)
    picked = sharded.filter(rh.uses_json)
    assert list(picked) == list(sharded)
    fewer = sharded - sharded.tunnels[0]
    assert list(fewer.call(rh.getpid)) == fleet.hosts[1:]
    assert dict(fewer.call(rh.getpid)) == {h: pids[h] for h in fleet.hosts[1:]}
    back = fewer | sharded
    assert [t.host for t in back] == fleet.hosts[1:] + fleet.hosts[:1]
    assert dict(back.call(rh.getpid)) == dict(pids)
    assert list((sharded & fewer).call(rh.getpid)) == fleet.hosts[1:]
    assert dict((sharded ^ fewer).call(rh.getpid)) == {fleet.hosts[0]: pids[fleet.hosts[0]]}
    with pytest.raises(ValueError, match="cannot move to a shard"):
        sharded | Local("here")


def test_tunnels_of_a_sharded_group_are_not_connected_stand_ins(sharded, fleet):
    """len, in and iteration by host name work; the stand-ins stay unconnected here."""
    sharded.call(rh.getpid)
    assert len(sharded) == 6 and fleet.hosts[2] in sharded and "nope" not in sharded
    assert [t.host for t in sharded] == fleet.hosts
    assert not any(t.connected for t in sharded)


def test_deadline_and_timeout_cross_to_the_shards(sharded, tmp_path):
    """A fan-out deadline and a per-call timeout end hosts still running, as CallTimeout."""
    result = sharded.call(rh.wait_for_file, str(tmp_path / "never"), deadline=1)
    assert all(isinstance(v, ErrorResult) and isinstance(v.exception, CallTimeout) for v in result.values())
    result = sharded.call(rh.wait_for_file, str(tmp_path / "never"), timeout=1)
    assert all(isinstance(v.exception, CallTimeout) for v in result.values())
    assert sharded.call(rh.add, 1, 2).ok


def test_put_fetch_and_progress_summed_over_shards(sharded, fleet, ssh_options, tmp_path, monkeypatch):
    """put and fetch work per host across shards; progress counts what the unsharded group counts."""
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(300_000))
    counted = []
    result = sharded.put(str(source), str(tmp_path / "remote-{host}.bin"), progress=counted.append)
    assert result.ok and list(result) == fleet.hosts
    for host in fleet.hosts:
        assert (tmp_path / ("remote-%s.bin" % host)).read_bytes() == source.read_bytes()
    plain = []
    with Group(fleet.hosts, options=ssh_options) as unsharded:
        unsharded.put(str(source), str(tmp_path / "plain-{host}.bin"), progress=plain.append)
    assert sum(counted) == sum(plain) > 0
    with open(source, "rb") as f:  # a file object crosses as its bytes
        assert sharded.put(f, str(tmp_path / "fobj-{host}.bin")).ok
    monkeypatch.chdir(tmp_path)  # after the shards started: relative paths are the driver's
    fetched = sharded.fetch(str(source), os.path.join("back", "{host}.bin"), make_dirs=True)
    assert fetched.ok
    assert all((tmp_path / "back" / ("%s.bin" % h)).read_bytes() == source.read_bytes() for h in fleet.hosts)


def test_a_put_of_a_missing_file_raises_at_once_as_without_shards(sharded, tmp_path):
    """A local file that cannot be read raises before any shard is asked, as an unsharded put does."""
    with pytest.raises(FileNotFoundError):
        sharded.put(str(tmp_path / "missing"), str(tmp_path / "never-{host}"))
    assert not list(tmp_path.glob("never-*"))


def test_a_shard_is_answered_only_for_the_serve_lists_of_its_own_hosts():
    """The driver, not the shard, decides what is served: a question with a serve= list none of
    the shard's hosts has is refused (pure driver logic, no process started)."""
    from chopsticks import SSHOptions, TunnelOptions
    from chopsticks.shards.core import HostSpec
    from chopsticks.shards.driver import Driver, _ShardSink

    driver = Driver(backend=None, workers=2, handshakes=4)
    driver.place([HostSpec("a", SSHOptions(), TunnelOptions(serve=("json",))), HostSpec("b", SSHOptions(), TunnelOptions())])
    own, other = _ShardSink(driver, driver.placed["a"]), _ShardSink(driver, driver.placed["b"])
    assert own.answer("data", (("json",), b"\x92\xa4json\xa8__init__")) is not None
    with pytest.raises(LookupError, match="none of its hosts has"):
        other.answer("data", (("json",), b"\x92\xa4json\xa8__init__"))


def test_a_module_only_the_driver_can_import_is_served_to_every_shard(sharded, demo_pkg):
    """A function from a package on the driver's sys.path only (not the shards') runs on every host."""
    deep, _ = demo_pkg
    result = sharded.call(deep.where)
    assert result.ok
    assert {value[2:] for value in result.values()} == {(42, 4)}
    assert set(sharded.call(deep.data, "data/info.txt").values()) == {b"package data\n"}


def test_a_module_the_driver_does_not_serve_is_refused_as_unsharded(sharded, tmp_path, monkeypatch):
    """The remote gets the driver's refusal (ModuleNotFoundError naming serve=), as without shards."""
    (tmp_path / "never_imported_here.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = sharded.call(rh.module_origin, "never_imported_here")
    for value in result.values():
        assert isinstance(value.exception, RemoteException) and value.exception.type_name == "ModuleNotFoundError"
        assert "does not serve never_imported_here" in value.msg + str(value.exception)


DRIVER_SCRIPT = textwrap.dedent("""\
    import os, sys
    from chopsticks import Group, SSHOptions

    print("script body ran", file=sys.stderr)
    port, key, known_hosts, hosts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

    def where_am_i(x):
        return x * 2, os.getpid() > 0

    group = Group(hosts, options=SSHOptions(port=int(port), key=key, known_hosts=known_hosts, ssh_config="",
                                            agent=False), workers=2)
    print(sorted(group.call(where_am_i, 21).values()), flush=True)
    if os.environ.get("WAIT"):
        sys.stdin.read()
    """)


def reap(proc):
    """Kill ``proc`` if it still runs, and wait for it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def run_driver(tmp_path, fleet, **popen):
    script = tmp_path / "driver_script.py"
    script.write_text(DRIVER_SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(fleet.port), fleet.key, fleet.known_hosts,
                             *fleet.hosts[:4]], cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=ROOT, **popen),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_function_of_an_unguarded_main_script_runs_sharded_and_the_script_runs_once(tmp_path, fleet):
    """A script's own function runs on every host through shards; shards never re-run the script."""
    proc = run_driver(tmp_path, fleet)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == repr([(42, True)] * 4)
    assert err.count("script body ran") == 1


def test_a_driver_killed_with_sigkill_leaves_no_shard_behind(tmp_path, fleet):
    """SIGKILL on the driver: its shard processes see their stdin end and exit."""
    proc = run_driver(tmp_path, fleet, WAIT="1")
    try:
        assert proc.stdout.readline().strip() == repr([(42, True)] * 4)
        shards = shard_pids(proc.pid)
        assert len(shards) == 2
        proc.kill()
        proc.wait()
        assert wait_gone(shards) == 0, "shard processes outlived their driver"
    finally:
        reap(proc)
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()


def until(condition, seconds=60):
    """Let the hub run until ``condition()`` holds (at most ``seconds``); its last value."""
    for _ in range(int(seconds * 100)):
        if condition():
            break
        gevent.sleep(0.01)
    return condition()


def test_a_shard_killed_mid_fan_out_fails_only_its_hosts_with_shard_lost(sharded, fleet, tmp_path):
    """Killing one shard by its PID while every host's call runs: its hosts get ShardLost
    naming it, the other shard's hosts finish, and the next fan-out starts a new shard."""
    sharded.call(rh.getpid)
    victim = shard_pids()[0]
    release, started = tmp_path / "release", tmp_path / "started"
    started.mkdir()
    got = []
    consumer = gevent.spawn(got.extend, sharded.iter_call(rh.wait_for_file, str(release), started=str(started)))
    assert until(lambda: len(os.listdir(started)) == 6)
    os.kill(victim, signal.SIGKILL)
    assert until(lambda: len(got) == 3)
    release.touch()
    consumer.get(timeout=60)
    lost = [(host, value) for host, value in got if isinstance(value, ErrorResult)]
    assert len(lost) == 3 and len(got) == 6
    for host, value in lost:
        assert isinstance(value.exception, ShardLost)
        assert "(pid %d on this machine) was lost" % victim in value.msg and "SIGKILL" in value.msg
    result = sharded.call(rh.getpid)
    assert result.ok and list(result) == fleet.hosts
    assert victim not in shard_pids() and len(shard_pids()) == 2


@pytest.mark.parametrize("workers", [0, -1, "x", 1.5, True])
def test_bad_workers_are_a_value_error_naming_the_parameter(workers):
    """workers= takes a whole number of at least 1 or 'auto'."""
    with pytest.raises(ValueError, match="workers must be"):
        Group(["a", "b"], workers=workers, ssh_config="")


def test_tunnels_that_cannot_leave_this_process_are_refused_with_workers(no_leaks):
    """A Local (or any tunnel that is not a plain SSHTunnel) is refused clearly with workers=2;
    workers=1 and None leave it be."""
    tunnels = [Local("a"), Local("b")]
    with pytest.raises(ValueError, match="cannot move to a shard"):
        Group(tunnels, workers=2)
    with pytest.raises(ValueError, match="cannot move to a shard"):
        Group(tunnels[:1], workers="auto")
    assert Group(tunnels, workers=1).call(rh.add, 1, 1).ok
    Group(tunnels).close()


def test_workers_auto_and_the_handshake_bound_split():
    """'auto' is the cores capped by the hosts; the handshake bound and concurrency are split so
    that the shards together keep the group's."""
    assert count_workers("auto", 1) == 1 and count_workers("auto", 10_000) == (os.cpu_count() or 1)
    assert count_workers(8, 3) == 3 and count_workers(None, 5) == 1
    assert split(64, 3) == [22, 21, 21] and sum(split(64, 7)) == 64
    driver = for_group(2, default_slots().limit, 10)
    assert sum(driver.handshakes) == default_slots().limit and driver.concurrency == [5, 5]
    assert for_group(4, 2, None).workers == 2


def test_a_groups_handshake_bound_is_its_tunnels_and_its_shards(no_leaks):
    """Group(handshake_slots=) bounds its host names' handshakes: one bound shared by its
    tunnels, or split over its shards (nothing connects here)."""
    slots = HandshakeSlots(6)
    plain = Group(["h1", "h2"], handshake_slots=slots)
    assert all(t._slots is slots for t in plain.tunnels)
    sharded = Group(["h%d" % i for i in range(4)], handshake_slots=slots, workers=2)
    try:
        assert sharded._driver is not None and sharded._driver.handshakes == [3, 3]
    finally:
        sharded.close()


def test_cli_with_workers_two_on_the_fleet(fleet):
    """python -m chopsticks.fanout --workers 2: the same JSON lines and exit codes as without."""
    args = ["-p", str(fleet.port), "-i", fleet.key, "--known-hosts", fleet.known_hosts, "-F", "", "--no-agent",
            "-H", ",".join(fleet.hosts), "--workers", "2"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    ok = subprocess.run([sys.executable, "-m", "chopsticks.fanout", *args, "call", "remote_helpers:add", "--json-args",
                         "[1, 2]"], cwd=HERE, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 6 and all('"value": 3' in line for line in lines)
    assert "6 hosts" in ok.stderr and "6 ok" in ok.stderr
    failed = subprocess.run([sys.executable, "-m", "chopsticks.fanout", *args, "run", "exit 3"], cwd=HERE, env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "6 failed" in failed.stderr
    bad = subprocess.run([sys.executable, "-m", "chopsticks.fanout", *args[:-1], "0", "run", "true"], cwd=HERE,
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--workers" in bad.stderr
    local = subprocess.run([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", "-H", "a,b",
                            "--workers", "2", "run", "true"], cwd=HERE, env=env, capture_output=True, text=True,
                           timeout=60)
    assert local.returncode == 2 and "--workers is not for --transport local" in local.stderr


def test_cli_ctrl_c_on_the_terminal_with_workers_exits_130_and_stops_the_shards(fleet, tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C): the CLI prints what finished,
    exits 130 without a traceback, and its shards are gone."""
    argv = [sys.executable, "-m", "chopsticks.fanout", "-p", str(fleet.port), "-i", fleet.key, "--known-hosts",
            fleet.known_hosts, "-F", "", "--no-agent", "-H", ",".join(fleet.hosts), "--workers", "2",
            "call", "remote_helpers:first_ones_fast", "--json-args", '["%s", 2]' % tmp_path]
    proc = subprocess.Popen(argv, cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        finished = [proc.stdout.readline(), proc.stdout.readline()]
        assert all('"value": "fast"' in line for line in finished), finished
        shards = shard_pids(proc.pid)
        assert len(shards) == 2
        os.killpg(proc.pid, signal.SIGINT)
        rest, errors = proc.communicate(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == 130
    assert "2 ok, 0 failed, 0 timed out, 4 unfinished (interrupted)" in errors
    assert "Traceback" not in errors
    assert wait_gone(shards) == 0


def test_cli_remote_output_with_workers_is_the_same_json_log_event(fleet):
    """Remote output from a shard reaches the CLI's log (JSON lines) as a remote_output event."""
    argv = [sys.executable, "-m", "chopsticks.fanout", "-p", str(fleet.port), "-i", fleet.key, "--known-hosts",
            fleet.known_hosts, "-F", "", "--no-agent", "-H", ",".join(fleet.hosts[:2]), "--workers", "2",
            "--log-format", "json", "call", "remote_helpers:print_lines", "hello from afar"]
    result = subprocess.run(argv, cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    said = {(e["host"], e["line"]) for e in events if e.get("event") == "remote_output"}
    assert said == {(host, "hello from afar") for host in fleet.hosts[:2]}


def test_shard_core_runs_a_job_as_events_and_asks_the_driver_for_modules(fleet, ssh_options, no_leaks):
    """ShardCore, what every backend runs, in this process: each host's result, then done; the
    module of the call comes through ask() (answered here by the driver's ASKS)."""
    from chopsticks.jobs import Call
    from chopsticks.modules import shared_server
    from chopsticks.options import TunnelOptions
    from chopsticks.shards.core import HostSpec, RunOrder, ShardCore, ShardSpec
    from chopsticks.shards.driver import ASKS

    asked = []

    def ask(kind, key):
        asked.append(kind)
        return ASKS[kind](shared_server(key[0]), key[1])

    hosts = tuple(fleet.hosts[:2])
    core = ShardCore(ShardSpec("test", tuple(HostSpec(h, ssh_options, TunnelOptions()) for h in hosts), 4), ask)
    try:
        events = list(core.events(RunOrder(Call.of(rh.add, (1, 2)), hosts)))
    finally:
        core.close()
    assert events[-1] == ("done",) and sorted(events[:-1]) == [("result", host, 3) for host in hosts]
    assert "preload" in asked


def test_a_sharded_group_used_from_another_thread_is_refused_not_hung(sharded):
    """Its shards' readers live in this thread's hub: another OS thread gets WrongThread at once."""
    import threading
    from chopsticks import WrongThread

    sharded.call(rh.getpid)
    raised = []

    def elsewhere():
        try:
            sharded.call(rh.getpid)
        except WrongThread as exc:
            raised.append(exc)

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join(60)
    assert len(raised) == 1 and "cannot be used from thread" in str(raised[0])


def test_concurrency_is_split_so_the_shards_together_keep_the_groups(fleet, ssh_options, tmp_path, no_leaks):
    """concurrency=2 over two shards: never more than two hosts' calls run at once."""
    with Group(fleet.hosts, options=ssh_options, workers=2, concurrency=2) as group:
        group.connect()
        result = group.call(rh.running_alongside, str(tmp_path), 0.2)
    assert result.ok and max(result.values()) <= 2


def test_closing_the_group_mid_fan_out_ends_the_fan_out_and_the_group_works_after(sharded, fleet, tmp_path):
    """Group.close() while a fan-out waits on its hosts: they end as ShardLost (nothing hangs),
    and the next call starts new shards."""
    results = sharded.iter_call(rh.first_ones_fast, str(tmp_path), 1, seconds=60)
    first = next(results)
    sharded.close()
    rest = dict(results)
    assert first[1] == "fast" and len(rest) == 5
    assert all(isinstance(value.exception, ShardLost) and "was lost: it was closed" in value.msg
               for value in rest.values())
    assert sharded.call(rh.add, 1, 2).ok


def test_tunnels_of_a_shard_asking_the_same_import_at_once_cost_one_question():
    """A shard's tunnels that ask for the same module while the driver's answer is on its way
    wait for that one question (pure shard logic, in this process)."""
    import msgpack
    from chopsticks.shards.core import ShardModules
    from chopsticks.wire import protocol

    asked = []
    release = gevent.event.Event()

    def ask(kind, key):
        asked.append((kind, key))
        release.wait()
        return protocol.MODULES, msgpack.packb([["m", False, "m.py", "x = 1\n"]])

    modules = ShardModules((), ask)
    payload = msgpack.packb("m")
    waiting = [gevent.spawn(modules.answer_import, payload, set(), "h%d" % i) for i in range(5)]
    gevent.sleep(0)
    release.set()
    gevent.joinall(waiting, raise_error=True)
    assert len(asked) == 1 and all(g.value[0] == protocol.MODULES for g in waiting)


def test_a_queue_on_a_sharded_group_runs_each_hosts_fifo_in_its_shard(sharded, fleet):
    """Queue.call on a sharded group works through each host's FIFO in its shard, in order: a
    failed call is that call's ErrorResult and the host goes on; callbacks and the Group's
    GroupResult come as without shards, and the driver connects nothing itself."""
    from chopsticks import Queue

    pids = dict(sharded.call(rh.getpid))
    queue = Queue()
    seen = []
    first = queue.call(sharded, rh.echo, 1).with_callback(seen.append)
    failed = queue.call(sharded, rh.raise_value_error, "no")
    last = queue.call(sharded - Group(fleet.hosts[:3]), rh.getpid)
    queue.run()
    assert list(first.value) == fleet.hosts and set(first.value.values()) == {1} and seen == [first.value]
    assert all(isinstance(v, ErrorResult) and "ValueError: no" in v.msg for v in failed.value.values())
    assert dict(last.value) == {host: pids[host] for host in fleet.hosts[3:]}
    assert not any(t.connected for t in sharded)


def test_a_shard_forwards_its_events_without_configuring_logging(monkeypatch):
    """logs.forward (what a shard runs) sends every library event to its driver as plain data
    and leaves structlog as the application (here: nobody) set it: only the CLI configures it."""
    import structlog
    from chopsticks import logs

    monkeypatch.setattr(logs, "_forward", None)
    sent = []
    configured = structlog.is_configured()
    logs.forward(lambda level, fields: sent.append((level, fields)))
    logs.event("tunnel_connected", host="h", python=(3, 11))
    logs.remote_output("h", "hello")
    assert structlog.is_configured() == configured
    assert sent == [("debug", {"event": "tunnel_connected", "host": "h", "python": "(3, 11)"}),
                    ("info", {"event": "remote_output", "host": "h", "line": "hello"})]


HOSTILE_SHARD = '''
import os, pickle, struct, time

class Evil:
    def __reduce__(self):  # unpickled, it would create the marker file
        return open, (%r, "w")

size = struct.unpack("!I", os.read(0, 4))[0]
while size > 0:  # the driver's spec, read and ignored
    size -= len(os.read(0, size))
data = pickle.dumps(("log", "info", {"event": Evil()}))
os.write(1, struct.pack("!I", len(data)) + data)
time.sleep(60)
'''


def test_a_shard_that_sends_other_than_a_results_types_is_lost_and_nothing_of_it_is_built(tmp_path, monkeypatch,
                                                                                         no_leaks):
    """A real process playing a hostile shard sends a pickle that would call open(): the driver
    refuses to build it (a result's types only), kills that shard and fails its hosts with
    ShardLost; the marker file is never created."""
    from chopsticks.shards import process

    marker = tmp_path / "built"
    monkeypatch.setattr(process, "BOOT", HOSTILE_SHARD % str(marker))
    group = Group(["hostile-1", "hostile-2"], workers=2)
    try:
        result = group.call(rh.getpid, deadline=30)
        assert all(isinstance(v, ErrorResult) and isinstance(v.exception, ShardLost) for v in result.values())
        assert all("could not be read" in v.msg and "not a type a result may hold" in v.msg for v in result.values())
        assert not marker.exists()
    finally:
        group.close()
