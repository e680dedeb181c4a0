"""Tunnel options are one frozen object: Group and SSHTunnel read the same fields and say the same about unknown names."""

import dataclasses

import pytest

import remote_helpers as rh
from chopsticks import Group, Local, ResultTooLarge, SSHTunnel
from chopsticks.options import TunnelOptions


def test_group_splits_tunnel_options_by_the_fields_of_tunnel_options():
    """Every TunnelOptions field given to a Group reaches its SSH tunnels; the rest are SSH options."""
    group = Group(["h1", "h2"], python="python3.11", sudo="app", connect_timeout=7, max_result=1 << 10,
                  serve=["json"], user="deploy", ssh_config="")
    for tunnel in group.tunnels:
        assert isinstance(tunnel, SSHTunnel)
        assert tunnel.tunnel_options == TunnelOptions(python="python3.11", connect_timeout=7, max_result=1 << 10,
                                                      serve=["json"], sudo="app")
        assert (tunnel.python, tunnel.sudo, tunnel.connect_timeout, tunnel.max_result) == ("python3.11", "app", 7, 1024)
        assert tunnel.options.user == "deploy"


def test_unknown_and_bad_options_say_who_got_them():
    """An unknown option name is a TypeError naming the constructor; a bad value a ValueError."""
    with pytest.raises(TypeError, match="Group got an unknown option"):
        Group(["h"], colour="blue", ssh_config="")
    with pytest.raises(TypeError, match="SSHTunnel got an unknown option"):
        SSHTunnel("h", colour="blue", ssh_config="")
    with pytest.raises(TypeError):
        Local("x", sudo=True)  # sudo is an SSH tunnel's option; Local keeps its keywords
    with pytest.raises(ValueError, match="must be positive"):
        Group(["h"], max_result=0, ssh_config="")
    with pytest.raises(dataclasses.FrozenInstanceError):
        TunnelOptions().max_result = 1  # type: ignore[misc]


def test_a_group_hands_one_options_object_to_every_tunnel():
    """Group builds one TunnelOptions (its own tunnel_options= with its keywords over it) and every
    SSH tunnel it makes holds that very object."""
    shared = TunnelOptions(connect_timeout=5, sudo="app")
    group = Group(["h1", "h2", "h3"], tunnel_options=shared, max_result=1 << 12, ssh_config="")
    first = group.tunnels[0].tunnel_options
    assert first == TunnelOptions(connect_timeout=5, sudo="app", max_result=1 << 12)
    assert all(tunnel.tunnel_options is first for tunnel in group.tunnels)


def test_serve_given_as_a_generator_is_read_once_for_all_tunnels():
    """A serve= generator is made a tuple when the options are made: every tunnel of the group
    serves its names, not just the first one to read it."""
    group = Group(["h1", "h2"], serve=(name for name in ["json", "csv"]), ssh_config="")
    for tunnel in group.tunnels:
        assert tunnel.tunnel_options.serve == ("json", "csv")
        assert tunnel.modules.serve_names == {"json", "csv"}
    options = TunnelOptions(serve=iter(["json"]))
    assert options.serve == ("json",) and options.serve == ("json",)


def test_tunnels_read_their_options_from_the_options_object():
    """A tunnel's keywords override its tunnel_options=; python, sudo, connect_timeout and
    max_result are read-only views of the one object, and a kind's default python fills a gap."""
    shared = TunnelOptions(connect_timeout=5, sudo="app", serve=["json"])
    tunnel = SSHTunnel("h", tunnel_options=shared, connect_timeout=9, ssh_config="")
    assert tunnel.tunnel_options == TunnelOptions(connect_timeout=9, sudo="app", serve=["json"])
    assert (tunnel.python, tunnel.sudo, tunnel.connect_timeout) == ("python3", "app", 9)
    assert SSHTunnel("h", tunnel_options=shared, ssh_config="").tunnel_options is shared
    assert SSHTunnel("h", sudo=True, ssh_config="").sudo == "root"
    with pytest.raises(AttributeError):
        tunnel.connect_timeout = 1  # type: ignore[misc]
    with pytest.raises(TypeError, match="Local has no sudo option"):
        Local("x", tunnel_options=shared)


def test_a_local_tunnel_runs_with_the_options_object(no_leaks):
    """max_result from tunnel_options= bounds a real agent's results, as the keyword does."""
    with Local("small", tunnel_options=TunnelOptions(max_result=1024)) as tunnel:
        with pytest.raises(ResultTooLarge):
            tunnel.call(rh.big_bytes, 4096)
        assert tunnel.call(rh.add, 1, 1) == 2
