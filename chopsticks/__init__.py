"""chopsticks: run Python functions on many machines at once, with nothing installed on them.

This package is also shipped to every remote agent, so importing it does nothing: the
public names below load their modules on first use (PEP 562), and the remote, which has no
gevent, never touches them.
"""

__version__ = "2.0.0.dev0"

_EXPORTS = {
    "AsyncResult": "chopsticks.queue",
    "AuthenticationFailed": "chopsticks.errors",
    "CallTimeout": "chopsticks.errors",
    "ChopsticksError": "chopsticks.errors",
    "ClusterError": "chopsticks.errors",
    "ConnectError": "chopsticks.errors",
    "ConnectTimeout": "chopsticks.errors",
    "ContainerError": "chopsticks.errors",
    "DepthLimitExceeded": "chopsticks.errors",
    "Docker": "chopsticks.containers",
    "HostKeyChanged": "chopsticks.errors",
    "HostKeyError": "chopsticks.errors",
    "ErrorResult": "chopsticks.results",
    "Group": "chopsticks.group",
    "GroupError": "chopsticks.errors",
    "GroupResult": "chopsticks.results",
    "HandshakeSlots": "chopsticks.transports.ssh",
    "InternalError": "chopsticks.errors",
    "Local": "chopsticks.tunnel",
    "MissingExtra": "chopsticks.errors",
    "ProtocolViolation": "chopsticks.errors",
    "Queue": "chopsticks.queue",
    "PythonNotFound": "chopsticks.errors",
    "RemoteException": "chopsticks.errors",
    "ResultTooLarge": "chopsticks.errors",
    "SSHOptions": "chopsticks.transports.ssh_options",
    "SSHTunnel": "chopsticks.ssh_tunnel",
    "SerializationError": "chopsticks.errors",
    "ShardLost": "chopsticks.errors",
    "SpecialFileError": "chopsticks.errors",
    "SubprocessTunnel": "chopsticks.tunnel",
    "Sudo": "chopsticks.tunnel",
    "TransferError": "chopsticks.errors",
    "TunnelClosed": "chopsticks.errors",
    "TunnelError": "chopsticks.errors",
    "Tunnel": "chopsticks.ssh_tunnel",
    "TunnelOptions": "chopsticks.options",
    "UnknownHostKey": "chopsticks.errors",
    "WrongThread": "chopsticks.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError("module 'chopsticks' has no attribute %r" % (name,)) from None
    import importlib  # not at the top: every agent imports this package, importlib costs it `warnings`
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(list(globals()) + __all__)
