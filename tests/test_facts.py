"""chopsticks.facts, gathered on real agents in one call each."""

import os
import socket

import pytest

from chopsticks import Group, RemoteException, facts
from chopsticks.tunnel import Local


def test_all_facts_in_one_call(local):
    """facts.all returns every fact with the types the docs give, gathered on the remote."""
    info = local.call(facts.all)
    assert set(info) == set(facts.FACTS)
    assert info["hostname"] == socket.gethostname()
    assert info["python_version"][:3] == local.remote_info["python"]
    assert info["python_executable"] == "/usr/bin/python3"
    assert info["cpus"] >= 1 and info["memory"]["total"] > info["memory"]["available"] > 0
    assert info["uptime"] > 0 and len(info["load"]) == 3
    assert "/" in info["disks"] and info["disks"]["/"]["total"] > 0
    assert info["kernel"]["system"] == "Linux" and info["arch"] == os.uname().machine
    assert info["ips"].get("lo") == "127.0.0.1"
    assert info["ip"] is None or not info["ip"].startswith("127.")
    assert info["os_release"].get("ID")


def test_original_signatures(local):
    """ip() and python_version(short) behave as in the original chopsticks."""
    assert local.call(facts.python_version, short=True) == local.remote_info["python"][:2]
    assert len(local.call(facts.python_version)) == 5
    assert local.call(facts.ip) == facts.ip()


def test_selected_facts_and_unknown_names(local):
    """all(names) gathers only those; an unknown name is a clear error."""
    assert set(local.call(facts.all, ["cpus", "load"])) == {"cpus", "load"}
    with pytest.raises(RemoteException) as info:
        local.call(facts.all, ["colour"])
    assert "unknown fact 'colour'" in str(info.value)


def test_facts_over_a_group(no_leaks):
    """A group gathers a fact from every host."""
    group = Group([Local("f1"), Local("f2")])
    try:
        result = group.call(facts.hostname)
        assert dict(result.successful()) == {"f1": socket.gethostname(), "f2": socket.gethostname()}
    finally:
        group.close()
