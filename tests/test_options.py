"""Tunnel options are one frozen object: Group and SSHTunnel read the same fields and say the same about unknown names."""

import dataclasses

import pytest

from chopsticks import Group, Local, SSHTunnel
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
