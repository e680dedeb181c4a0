"""Group: fan-out over real tunnels; every host gets a result, failures never stop the others."""

import functools
import time

import pytest

import remote_helpers as rh
from chopsticks import CallTimeout, ErrorResult, Group, GroupError, GroupResult, RemoteException
from chopsticks.tunnel import Local, SSHTunnel


@pytest.fixture
def locals_(no_leaks):
    tunnels = [Local("l%d" % i) for i in range(4)]
    yield tunnels
    Group(tunnels).close()


def test_call_returns_a_result_per_host_in_order(locals_):
    """Group.call gives a GroupResult keyed by host, in the group's order."""
    result = Group(locals_).call(rh.add, 1, 2)
    assert isinstance(result, GroupResult)
    assert list(result) == ["l0", "l1", "l2", "l3"]
    assert dict(result.successful()) == {"l0": 3, "l1": 3, "l2": 3, "l3": 3}
    assert result.ok and result.raise_failures() is result


def test_failures_are_data_and_do_not_stop_the_others(locals_):
    """A host without python fails alone; a remote error comes back with its traceback."""
    missing = Local("nopython", python="/nonexistent/python3")
    result = Group(locals_[:2] + [missing]).call(rh.add, 1, 1)
    assert dict(result.successful()) == {"l0": 2, "l1": 2}
    assert result["nopython"].msg.startswith("PythonNotFound")
    result = Group(locals_[:2]).call(rh.raise_value_error, "boom")
    assert result["l0"].msg == "ValueError: boom" and "raise ValueError" in result["l0"].tb
    assert isinstance(result["l1"].exception, RemoteException)


def test_results_stream_as_they_arrive(locals_):
    """iter_call yields each host's result as it arrives, and every host once."""
    group = Group(locals_[:2])
    group.call(rh.add, 0, 0)
    started = time.monotonic()
    stream = group.iter_call(rh.sleep_and_return, 0.0, "fast")
    first_host, first = next(stream)
    assert first == "fast" and time.monotonic() - started < 2
    assert sorted([first_host] + [host for host, _ in stream]) == ["l0", "l1"]


def test_per_host_timeout_and_overall_deadline(locals_):
    """A host that hangs fails with CallTimeout by its timeout, or by the fan-out's deadline."""
    group = Group(locals_[:2])
    locals_[0].call(rh.add, 0, 0)
    locals_[1].call(rh.add, 0, 0)
    started = time.monotonic()
    result = group.call(rh.sleep_and_return, 30, "never", timeout=0.5)
    assert all(isinstance(v, ErrorResult) and isinstance(v.exception, CallTimeout) for v in result.values())
    result = group.call(rh.sleep_and_return, 30, "never", deadline=0.5)
    assert all(isinstance(v.exception, CallTimeout) for v in result.values())
    assert time.monotonic() - started < 10
    with pytest.raises(GroupError) as info:
        result.raise_failures()
    assert "2 of 2 hosts failed" in str(info.value) and set(info.value.failures) == {"l0", "l1"}


def test_set_operations_and_filter(no_leaks):
    """|, +, &, - and ^ work by host name; filter selects tunnels; a tunnel acts as a group of one."""
    a, b, c = Local("a"), Local("b"), Local("c")
    ab, bc = Group([a, b]), Group([b, c])
    assert [t.host for t in ab | bc] == ["a", "b", "c"]
    assert [t.host for t in ab + bc] == ["a", "b", "c"]
    assert [t.host for t in ab & bc] == ["b"]
    assert [t.host for t in ab - bc] == ["a"]
    assert sorted(t.host for t in ab ^ bc) == ["a", "c"]
    assert [t.host for t in (a | c)] == ["a", "c"]
    assert [t.host for t in (ab | bc).select(lambda t: t.host != "b")] == ["a", "c"]
    assert "a" in ab and c not in ab and len(ab | bc) == 3
    assert repr(ab) == "Group([Local('a'), Local('b')])"


def test_filter_runs_the_predicate_on_each_host_as_the_original_did(tmp_path, no_leaks):
    """filter(predicate) keeps the hosts where the predicate, run remotely, is true."""
    with Group([Local("a"), Local("b"), Local("c")]) as group:
        kept = group.filter(functools.partial(rh.claim, str(tmp_path)))
        assert len(kept) == 1 and kept.tunnels[0] in group.tunnels
        (tmp_path / "claimed").unlink()
        dropped = group.filter(functools.partial(rh.claim, str(tmp_path)), exclude=True)
        assert len(dropped) == 2  # the one that claimed it this time is left out
        with pytest.raises(GroupError, match="3 of 3 hosts failed"):
            group.filter(functools.partial(rh.raise_value_error, "no"))


def test_bad_groups_are_refused():
    """Duplicate names, a bare string, junk members and a zero concurrency are refused."""
    with pytest.raises(ValueError):
        Group([Local("x"), Local("x")])
    with pytest.raises(TypeError):
        Group("web-1")
    with pytest.raises(TypeError):
        Group([42])
    with pytest.raises(ValueError):
        Group([], concurrency=0)


def test_ssh_group_with_a_dead_host(fleet, ssh_options, no_leaks):
    """Host names become SSH tunnels sharing options; a refused host fails alone."""
    from fleet import free_port
    live = Group(fleet.hosts[:4], options=ssh_options, concurrency=2)
    assert all(isinstance(t, SSHTunnel) for t in live)
    dead = SSHTunnel("127.0.0.9", options=ssh_options, port=free_port())
    group = live | dead
    try:
        result = group.call(rh.add, 20, 22)
        assert dict(result.successful()) == {h: 42 for h in fleet.hosts[:4]}
        assert "refused" in result["127.0.0.9"].msg
    finally:
        group.close()


def test_raise_failures_raises_a_remote_exception_as_the_original_did(no_leaks):
    """Code written for chopsticks 1.0 catches RemoteException around raise_failures()."""
    with Group([Local("a")]) as group:
        with pytest.raises(RemoteException) as info:
            group.call(rh.raise_value_error, "bad").raise_failures()
    assert isinstance(info.value, GroupError)
    assert str(info.value) == "1 of 1 hosts failed:\n  a: ValueError: bad"
