"""The public API: what ``chopsticks`` exports, and that importing it has no side effects."""

import subprocess
import sys

import chopsticks


def test_exported_names_are_pinned():
    """The package exports exactly these names (adding one is a decision, not an accident)."""
    assert chopsticks.__all__ == [
        "AsyncResult", "AuthenticationFailed", "CallTimeout", "ChopsticksError", "ClusterError", "ConnectError", "ConnectTimeout",
        "ContainerError", "DepthLimitExceeded", "Docker", "ErrorResult", "Group", "GroupError", "GroupResult",
        "HandshakeSlots",
        "HostKeyChanged", "HostKeyError", "InternalError", "Local", "MissingExtra", "ProtocolViolation", "PythonNotFound",
        "Queue", "RemoteException", "ResultTooLarge", "SSHOptions", "SSHTunnel", "SerializationError", "ShardLost",
        "SpecialFileError", "SubprocessTunnel",
        "Sudo", "TransferError", "Tunnel", "TunnelClosed", "TunnelError", "TunnelOptions", "UnknownHostKey", "WrongThread",
    ]
    for name in chopsticks.__all__:
        assert getattr(chopsticks, name) is not None


def test_errors_subclass_the_builtins_they_mean():
    """Users can catch TimeoutError, ConnectionError and TypeError without our names."""
    assert issubclass(chopsticks.CallTimeout, TimeoutError)
    assert issubclass(chopsticks.TunnelClosed, ConnectionError)
    assert issubclass(chopsticks.PythonNotFound, ConnectionError)
    assert issubclass(chopsticks.SerializationError, TypeError)
    for name in chopsticks.__all__:
        obj = getattr(chopsticks, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, chopsticks.ChopsticksError)


def test_import_has_no_side_effects():
    """Importing chopsticks loads no gevent, and even chopsticks.tunnel configures no logging."""
    code = ("import sys, chopsticks; import chopsticks.tunnel;"
            "import structlog; print(structlog.is_configured())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and out.stderr == ""
    code = "import sys, chopsticks; print('gevent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
