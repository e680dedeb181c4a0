"""sudo with a password (``sudo_password=``, ``--ask-become-pass``): ``sudo -S`` with a random
prompt, the password written only in answer to that exact prompt line, never shown. Against a
real sudo that asks the test user for its password, locally and over SSH."""

import dataclasses
import os
import subprocess
import sys

import pytest

import remote_helpers as rh
from conftest import require
from chopsticks.errors import ConnectError
from chopsticks.options import TunnelOptions
from chopsticks.ssh_tunnel import SSHTunnel
from chopsticks.tunnel import Sudo

SUDOERS = "/etc/sudoers.d/chopsticks-test-password"


@pytest.fixture(scope="module")
def sudo_asks(test_user):
    """The test user may run anything as root through sudo, with its password."""
    user, password = test_user
    require(os.path.isdir("/etc/sudoers.d") and os.getuid() == 0, "needs root and /etc/sudoers.d")
    with open(SUDOERS, "w") as f:
        f.write("%s ALL=(ALL) ALL\nDefaults:%s !lecture, timestamp_timeout=0\n" % (user, user))
    os.chmod(SUDOERS, 0o440)
    try:
        yield user, password
    finally:
        os.unlink(SUDOERS)


def _from(user):
    class SudoFromUser(Sudo):
        """sudo run by ``user`` (not root, whom sudo never asks)."""

        def cmd_args(self):
            return ["runuser", "-u", user, "--"] + super().cmd_args()
    return SudoFromUser


def test_the_password_answers_sudos_own_prompt(sudo_asks, no_leaks, capfd):
    """The agent runs as root after sudo asked the user's password; the prompt is not shown."""
    user, password = sudo_asks
    with _from(user)(sudo_password=password) as tunnel:
        assert tunnel.call(os.getuid) == 0
    assert "[chopsticks sudo" not in capfd.readouterr().err


def test_a_wrong_password_is_one_clear_error_without_the_password(sudo_asks, no_leaks, capfd):
    """A wrong password: sudo asks again, the start ends with a ConnectError saying so; the
    password is in no message, log or repr."""
    user, _ = sudo_asks
    secret = "wrong-" + os.urandom(4).hex()
    tunnel = _from(user)(sudo_password=secret)
    with pytest.raises(ConnectError) as info:
        tunnel.call(rh.add, 1, 1)
    assert "sudo refused the password for running as root" in str(info.value)
    assert secret not in str(info.value) and secret not in capfd.readouterr().err
    assert secret not in repr(tunnel) and secret not in repr(tunnel.tunnel_options)


def test_no_password_is_written_where_sudo_asks_for_none(no_leaks):
    """Where sudo lets the agent run without asking (root), the ready line opens the gate and
    nothing but the bootstrap is written: the agent starts."""
    with Sudo(sudo_password="never-asked") as tunnel:
        assert tunnel.call(os.getuid) == 0


def test_without_a_password_sudo_n_says_how_to_give_one(sudo_asks, no_leaks):
    """sudo -n that wants a password: the error points at sudo_password= / --ask-become-pass."""
    user, _ = sudo_asks
    with pytest.raises(ConnectError, match="--ask-become-pass"):
        _from(user)().call(rh.add, 1, 1)


def test_over_ssh_as_a_user_who_must_give_sudo_its_password(fleet, ssh_options, sudo_asks, no_leaks):
    """An SSH login as the test user, the agent under sudo with its password: root; and a
    sudo_password on a kind of tunnel that runs no sudo is refused."""
    user, password = sudo_asks
    options = dataclasses.replace(ssh_options, user=user, key=(), password=password)
    with SSHTunnel(fleet.hosts[0], options=options, sudo=True, sudo_password=password) as tunnel:
        assert tunnel.call(os.getuid) == 0
    from chopsticks.tunnel import Local
    with pytest.raises(TypeError, match="sudo_password= is for Sudo"):
        Local(sudo_password=password)
    assert password not in repr(TunnelOptions(sudo_password=password))


def test_the_cli_asks_once(fleet, sudo_asks):
    """--ask-become-pass reads the password once (from stdin without a terminal) and every host's
    agent runs as root; without --sudo it is a usage error."""
    user, password = sudo_asks
    from test_fanout import HERE, ROOT, ssh_args
    argv = [sys.executable, "-m", "chopsticks.fanout", *ssh_args(fleet), "-u", user, "--ask-pass", "--sudo",
            "--ask-become-pass", "-H", ",".join(fleet.hosts[:3]), "call", "os:getuid"]
    result = subprocess.run(argv, input="%s\n%s\n" % (password, password), capture_output=True, text=True,
                            cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60, start_new_session=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"value": 0') == 3
    assert password not in result.stdout + result.stderr
    bad = subprocess.run(argv[:argv.index("--sudo")] + ["--ask-become-pass", "-H", "a", "run", "true"],
                         capture_output=True, text=True, cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT),
                         timeout=60, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "--ask-become-pass is for --sudo" in bad.stderr


def test_a_prompt_that_is_not_sudos_own_gets_nothing(tmp_path, no_leaks):
    """A command that prints password prompts of its own (not the start's random one) and keeps
    what it reads: it reads no password, only, once it says it is ready, the bootstrap."""
    caught = tmp_path / "stdin"

    class FakeSudo(Sudo):
        """Stands where sudo would: prompts of its own, then records its stdin."""

        def cmd_args(self):
            ready = self._sudo_prompt.ready
            return ["sh", "-c", 'echo "Password:" >&2; echo "[sudo] password for root:" >&2; sleep 0.5; '
                                'echo "$1" >&2; exec cat > "$0"', str(caught), ready]
    tunnel = FakeSudo(sudo_password="the-secret", connect_timeout=3)
    with pytest.raises(ConnectError):
        tunnel.call(rh.add, 1, 1)
    written = caught.read_bytes()
    assert b"the-secret" not in written
    assert written.startswith(b"\x00") or len(written) > 1000  # the bootstrap's bundle, after the ready line
