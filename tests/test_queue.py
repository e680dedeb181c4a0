"""Queue: per-host FIFOs run together; fast hosts never wait for slow ones."""

import time

import pytest

import remote_helpers as rh
from chopsticks import ErrorResult, Group, GroupResult, Queue
from chopsticks.tunnel import Local


@pytest.fixture
def pair(no_leaks):
    slow, fast = Local("slow"), Local("fast")
    yield slow, fast
    slow.close()
    fast.close()


def test_fifos_run_in_order_and_fast_hosts_do_not_wait(pair):
    """Each host runs its calls in order; the fast host finishes while the slow one sleeps."""
    slow, fast = pair
    finished = []
    queue = Queue()
    s1 = queue.call(slow, rh.sleep_and_return, 1.0, "s1").with_callback(lambda v: finished.append(v))
    f1 = queue.call(fast, rh.echo, "f1").with_callback(lambda v: finished.append(v))
    f2 = queue.call(fast, rh.echo, "f2").with_callback(lambda v: finished.append(v))
    with pytest.raises(ValueError):
        s1.value
    queue.run()
    assert (s1.value, f1.value, f2.value) == ("s1", "f1", "f2")
    assert finished == ["f1", "f2", "s1"]


def test_errors_are_values_and_the_host_goes_on(pair):
    """A failed call's value is an ErrorResult, and that host's next call still runs."""
    slow, _ = pair
    queue = Queue()
    bad = queue.call(slow, rh.raise_value_error, "queued")
    good = queue.call(slow, rh.add, 2, 2)
    queue.run()
    assert isinstance(bad.value, ErrorResult) and bad.value.msg == "ValueError: queued"
    assert good.value == 4


def test_group_targets_give_a_group_result(pair):
    """Queueing on a Group gives one AsyncResult whose value is a GroupResult."""
    group = Group(list(pair))
    queue = Queue()
    result = queue.call(group, rh.add, 1, 1)
    queue.run(timeout=10)
    assert isinstance(result.value, GroupResult) and dict(result.value) == {"slow": 2, "fast": 2}
    started = time.monotonic()
    Queue().run()  # nothing queued: returns at once
    assert time.monotonic() - started < 1
    with pytest.raises(TypeError):
        Queue().call("web-1", rh.add, 1, 1)
