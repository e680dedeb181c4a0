"""SSH tunnels against a real OpenSSH sshd on loopback, with keys generated for this run."""

import dataclasses
import os
import signal
import subprocess
import time

import gevent
import pytest

import remote_helpers as rh
from chopsticks import (
    AuthenticationFailed, ConnectError, ConnectTimeout, HostKeyChanged, PythonNotFound, RemoteException,
    TunnelClosed, UnknownHostKey,
)
from chopsticks.tunnel import SSHTunnel, Tunnel
from conftest import require
from fleet import PASSPHRASE, free_port


@pytest.fixture
def tunnels(no_leaks):
    """Collects tunnels made by a test and closes them before the leak check."""
    made = []

    def make(host, **kwargs):
        tunnel = SSHTunnel(host, **kwargs)
        made.append(tunnel)
        return tunnel

    yield make
    for tunnel in made:
        tunnel.close()


def test_call_over_ssh(fleet, ssh_options, tunnels):
    """A call runs in an agent started over SSH; Tunnel is SSHTunnel, as in the original."""
    assert Tunnel is SSHTunnel
    tunnel = tunnels(fleet.hosts[0], options=ssh_options)
    assert tunnel.call(rh.add, 2, 3) == 5
    assert tunnel.remote_info["python"][0] == 3
    assert repr(tunnel) == "SSHTunnel('127.0.0.2')" and tunnel.destination.hostname == "127.0.0.2"
    with pytest.raises(RemoteException):
        tunnel.call(rh.raise_value_error, "over ssh")
    assert tunnel.call(rh.add, 1, 1) == 2


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa", "passphrase"])
def test_key_types(fleet, ssh_options, tunnels, kind):
    """ed25519, ECDSA and RSA keys, and a key with a passphrase, all authenticate."""
    options = dataclasses.replace(ssh_options, key=fleet.keys[kind],
                                  passphrase=PASSPHRASE if kind == "passphrase" else None)
    assert tunnels(fleet.hosts[1], options=options).call(rh.add, 1, 2) == 3


def test_wrong_key_is_refused(fleet, ssh_options, tunnels, tmp_path):
    """A key the server does not accept fails with AuthenticationFailed naming what was tried."""
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    tunnel = tunnels(fleet.hosts[0], options=dataclasses.replace(ssh_options, key=str(other)))
    with pytest.raises(AuthenticationFailed) as info:
        tunnel.call(rh.add, 1, 1)
    assert str(other) in str(info.value) and "refused" in str(info.value)


def test_missing_key_file_and_wrong_passphrase(fleet, ssh_options, tunnels):
    """A key path that does not exist, or a wrong passphrase, is a clear error."""
    with pytest.raises(AuthenticationFailed) as info:
        tunnels(fleet.hosts[0], options=dataclasses.replace(ssh_options, key="/nonexistent/key")).call(rh.add, 1, 1)
    assert "does not exist" in str(info.value)
    options = dataclasses.replace(ssh_options, key=fleet.keys["passphrase"], passphrase="wrong")
    with pytest.raises(AuthenticationFailed) as info:
        tunnels(fleet.hosts[0], options=options).call(rh.add, 1, 1)
    assert "wrong passphrase" in str(info.value)


def test_password_auth(fleet, ssh_options, tunnels, test_user):
    """A password logs in; a wrong one is refused with AuthenticationFailed."""
    user, password = test_user
    options = dataclasses.replace(ssh_options, user=user, key=(), password=password)
    assert tunnels(fleet.hosts[2], options=options).call(rh.getpid) > 0
    with pytest.raises(AuthenticationFailed) as info:
        tunnels(fleet.hosts[2], options=dataclasses.replace(options, password="nope")).call(rh.add, 1, 1)
    assert "password" in str(info.value)
    assert "nope" not in str(info.value) and "nope" not in repr(options) and password not in repr(options)


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """A real ssh-agent on a socket of this test's own, as SSH_AUTH_SOCK; add(key) loads a key."""
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # "SSH_AUTH_SOCK=...; export ...": printed once the socket listens
    monkeypatch.setenv("SSH_AUTH_SOCK", sock)

    def add(key):
        subprocess.run(["ssh-add", "-q", key], env=dict(os.environ, SSH_AUTH_SOCK=sock), check=True,
                       capture_output=True)

    yield add
    proc.terminate()
    proc.wait()
    proc.stdout.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A temporary HOME with an empty ~/.ssh (mode 700)."""
    ssh_dir = tmp_path / "home" / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return ssh_dir


def _copy_key(source, target, mode=0o600):
    with open(source, "rb") as f:
        data = f.read()
    target.write_bytes(data)
    os.chmod(target, mode)
    return target


def test_ssh_agent_is_tried(fleet, ssh_options, tunnels, agent, home):
    """With no key given and no ~/.ssh/id_* to fall back on, a key held by ssh-agent logs in."""
    agent(fleet.keys["ecdsa"])
    options = dataclasses.replace(ssh_options, key=None, agent=True)
    assert tunnels(fleet.hosts[3], options=options).call(rh.add, 4, 4) == 8


def test_a_refused_agent_key_moves_on_to_the_next(fleet, ssh_options, tunnels, agent, home, tmp_path):
    """As OpenSSH does, each ssh-agent identity is tried in turn: the first refused, the next logs in."""
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger-key", "-f", str(stranger)],
                   check=True)
    agent(str(stranger))
    agent(fleet.keys["ecdsa"])
    listed = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "stranger-key" in listed[0] and len(listed) == 2  # the refused key is offered first
    options = dataclasses.replace(ssh_options, key=None, agent=True)
    assert tunnels(fleet.hosts[3], options=options).call(rh.add, 2, 2) == 4


def test_agent_holds_the_passphrase_protected_default_key(fleet, ssh_options, tunnels, agent, home, tmp_path):
    """~/.ssh/id_ed25519 with a passphrase, loaded in ssh-agent: login succeeds, as with ssh."""
    _copy_key(fleet.keys["passphrase"], home / "id_ed25519")
    clear = _copy_key(fleet.keys["passphrase"], tmp_path / "clear")
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", PASSPHRASE, "-N", "", "-f", str(clear)], check=True,
                   capture_output=True)
    agent(str(clear))
    options = dataclasses.replace(ssh_options, key=None, agent=True)
    assert tunnels(fleet.hosts[3], options=options).call(rh.add, 4, 4) == 8


def test_failed_login_names_every_credential_and_why(fleet, ssh_options, tunnels, agent, home, tmp_path):
    """Unloadable, unprotected and directory keys are skipped and noted; the agent is still tried."""
    _copy_key(fleet.keys["passphrase"], home / "id_ed25519")  # no passphrase given
    _copy_key(fleet.keys["rsa"], home / "id_rsa", mode=0o644)  # the server would accept it
    (home / "id_ecdsa").mkdir()
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger-key", "-f", str(stranger)],
                   check=True)
    agent(str(stranger))
    options = dataclasses.replace(ssh_options, key=None, agent=True)
    with pytest.raises(AuthenticationFailed) as info:
        tunnels(fleet.hosts[3], options=options).call(rh.add, 1, 1)
    text = str(info.value)
    assert "key %s: cannot be loaded (wrong passphrase: none was given" % (home / "id_ed25519") in text
    assert "key %s: is a directory" % (home / "id_ecdsa") in text
    assert "UNPROTECTED PRIVATE KEY FILE! Permissions 0644 for '%s' are too open" % (home / "id_rsa") in text
    assert "chmod 600 '%s'" % (home / "id_rsa") in text
    assert "ssh-agent key 'stranger-key': refused by the server" in text


def _identities_only_config(tmp_path, fleet, identity_file, identities_only):
    path = tmp_path / ("config-%s" % identities_only)
    path.write_text("Host *\n    Port %d\n    UserKnownHostsFile %s\n    IdentityFile %s\n    IdentitiesOnly %s\n"
                    % (fleet.port, fleet.known_hosts, identity_file, identities_only))
    return str(path)


def test_identities_only_keeps_other_agent_keys_out(fleet, tunnels, agent, home, tmp_path):
    """IdentitiesOnly yes: an agent key that is not among the IdentityFiles is not offered (here
    it is the only one the server accepts, so the login fails saying why); without it, it is."""
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    agent(fleet.keys["ecdsa"])
    loose = _identities_only_config(tmp_path, fleet, stranger, "no")
    assert tunnels(fleet.hosts[2], ssh_config=loose, agent=True).call(rh.add, 1, 1) == 2
    strict = _identities_only_config(tmp_path, fleet, stranger, "yes")
    tunnel = tunnels(fleet.hosts[2], ssh_config=strict, agent=True)
    assert tunnel.destination.identities_only
    with pytest.raises(AuthenticationFailed) as info:
        tunnel.call(rh.add, 1, 1)
    assert "ssh-agent: holds none of the keys listed (IdentitiesOnly)" in str(info.value)
    assert "key %s: refused by the server" % stranger in str(info.value)


def test_identities_only_uses_the_agents_copy_of_a_listed_key(fleet, tunnels, agent, home, tmp_path):
    """IdentitiesOnly yes with a passphrase-protected IdentityFile (no passphrase given) that the
    agent holds: the agent's copy logs in, found by the key file's public key."""
    listed = _copy_key(fleet.keys["passphrase"], tmp_path / "listed")  # no listed.pub beside it
    clear = _copy_key(fleet.keys["passphrase"], tmp_path / "clear")
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", PASSPHRASE, "-N", "", "-f", str(clear)], check=True,
                   capture_output=True)
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    agent(str(stranger))
    agent(str(clear))
    strict = _identities_only_config(tmp_path, fleet, listed, "yes")
    assert tunnels(fleet.hosts[2], ssh_config=strict, agent=True).call(rh.add, 2, 2) == 4


def test_key_path_that_is_a_directory(fleet, ssh_options, tunnels, tmp_path):
    """A key path that is a directory is a clear error, not 'does not exist'."""
    options = dataclasses.replace(ssh_options, key=str(tmp_path))
    with pytest.raises(AuthenticationFailed) as info:
        tunnels(fleet.hosts[0], options=options).call(rh.add, 1, 1)
    assert "key %s: is a directory, not a private key file" % tmp_path in str(info.value)


def test_sudo(fleet, ssh_options, tunnels):
    """sudo=True runs the agent as root through sudo -n; sudo='nobody' as that user."""
    tunnel = tunnels(fleet.hosts[0], options=ssh_options, sudo="nobody")
    assert tunnel.call(os.getuid) == 65534


def test_sudo_that_wants_a_password(fleet, ssh_options, tunnels, test_user):
    """sudo that would prompt for a password fails at once with an error that says so."""
    user, password = test_user
    options = dataclasses.replace(ssh_options, user=user)
    with pytest.raises(ConnectError) as info:
        tunnels(fleet.hosts[0], options=options, sudo=True).call(rh.add, 1, 1)
    assert "sudo asks for a password" in str(info.value)


# -- host keys ------------------------------------------------------------------------------

def _host_key(fleet):
    with open(fleet.path("host_ed25519.pub")) as f:
        return f.read().split()[1]


def test_unknown_host_key_is_refused_by_default(fleet, ssh_options, tunnels, tmp_path):
    """Strict checking (the default) refuses a host missing from known_hosts, naming its fingerprint."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(UnknownHostKey) as info:
        tunnels(fleet.hosts[0], options=dataclasses.replace(ssh_options, known_hosts=str(empty))).call(rh.add, 1, 1)
    assert "SHA256:" in str(info.value) and "accept-new" in str(info.value)


def test_accept_new_records_the_key(fleet, ssh_options, tunnels, tmp_path):
    """accept-new records an unknown key, then strict checking accepts the host."""
    path = tmp_path / "sub" / "known_hosts"
    options = dataclasses.replace(ssh_options, known_hosts=str(path), host_key_policy="accept-new")
    assert tunnels(fleet.hosts[0], options=options).call(rh.add, 1, 1) == 2
    assert _host_key(fleet) in path.read_text()
    strict = dataclasses.replace(options, host_key_policy="strict")
    assert tunnels(fleet.hosts[0], options=strict).call(rh.add, 1, 2) == 3


def test_changed_host_key_is_refused(fleet, ssh_options, tunnels, tmp_path):
    """A different key of the same type in known_hosts is refused, even with accept-new."""
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text("[%s]:%d %s\n" % (fleet.hosts[0], fleet.port, " ".join(other.with_suffix(".pub").read_text().split()[:2])))
    for policy in ("strict", "accept-new"):
        options = dataclasses.replace(ssh_options, known_hosts=str(known), host_key_policy=policy)
        with pytest.raises(HostKeyChanged) as info:
            tunnels(fleet.hosts[0], options=options).call(rh.add, 1, 1)
        assert "HAS CHANGED" in str(info.value)


def test_hashed_and_wildcard_known_hosts(fleet, ssh_options, tunnels, tmp_path):
    """Hashed entries (ssh-keygen -H) and wildcard patterns both match."""
    hashed = tmp_path / "hashed"
    hashed.write_text("[%s]:%d ssh-ed25519 %s\n" % (fleet.hosts[4], fleet.port, _host_key(fleet)))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "|1|" in hashed.read_text()
    assert tunnels(fleet.hosts[4], options=dataclasses.replace(ssh_options, known_hosts=str(hashed))).call(
        rh.add, 1, 1) == 2
    wild = tmp_path / "wild"
    wild.write_text("[127.0.0.*]:%d,!127.0.0.9 ssh-ed25519 %s\n" % (fleet.port, _host_key(fleet)))
    assert tunnels(fleet.hosts[5], options=dataclasses.replace(ssh_options, known_hosts=str(wild))).call(
        rh.add, 1, 1) == 2


def test_host_key_checking_off(fleet, ssh_options, tunnels):
    """host_key_policy='off' skips the check."""
    options = dataclasses.replace(ssh_options, known_hosts="/nonexistent", host_key_policy="off")
    assert tunnels(fleet.hosts[0], options=options).call(rh.add, 1, 1) == 2


# -- ~/.ssh/config and jump hosts -----------------------------------------------------------

def test_ssh_config_is_honoured(fleet, tunnels, tmp_path):
    """Host patterns, HostName, User, Port, IdentityFile, UserKnownHostsFile, StrictHostKeyChecking."""
    config = tmp_path / "config"
    config.write_text(
        "Host web-*\n"
        "    HostName %s\n"
        "    Port %d\n"
        "    User root\n"
        "    IdentityFile %s\n"
        "    UserKnownHostsFile %s\n"
        "    StrictHostKeyChecking yes\n"
        "Host *\n"
        "    Port 1\n" % (fleet.hosts[1], fleet.port, fleet.keys["rsa"], fleet.known_hosts))
    tunnel = tunnels("web-7", ssh_config=str(config), agent=False)
    assert tunnel.destination.hostname == fleet.hosts[1] and tunnel.destination.port == fleet.port
    assert tunnel.call(rh.add, 1, 1) == 2
    assert tunnel.host == "web-7"


def test_keepalive_settings(tmp_path):
    """Keepalive is on by default (15 s x 3); ServerAliveInterval/CountMax are honoured; options win."""
    config = tmp_path / "config"
    config.write_text("Host slow-*\n    ServerAliveInterval 7\n    ServerAliveCountMax 5\n")
    default = SSHTunnel("fast-1", ssh_config=str(config)).destination
    assert (default.keepalive_interval, default.keepalive_count_max) == (15, 3)
    configured = SSHTunnel("slow-1", ssh_config=str(config)).destination
    assert (configured.keepalive_interval, configured.keepalive_count_max) == (7, 5)
    given = SSHTunnel("slow-1", ssh_config=str(config), keepalive_interval=0).destination
    assert (given.keepalive_interval, given.keepalive_count_max) == (0, 5)
    for bad in ({"keepalive_interval": 0.5}, {"keepalive_interval": -1}, {"keepalive_count_max": 0}):
        with pytest.raises(ValueError):
            SSHTunnel("h", ssh_config="", **bad)


def test_bad_number_in_ssh_config_names_file_and_line(tmp_path):
    """'Port abc' (in any Host block) is a ValueError naming the file, the line and what is wanted."""
    config = tmp_path / "config"
    config.write_text("Host elsewhere\n    User x\n    Port abc\n")
    with pytest.raises(ValueError) as info:
        SSHTunnel("web-1", ssh_config=str(config))
    assert "%s line 3: bad Port 'abc': it must be a port number from 1 to 65535" % config in str(info.value)


def test_include_in_a_block_that_does_not_apply_is_not_read(tmp_path):
    """An Include inside a non-matching Host block is not read, so its Host lines cannot apply."""
    included = tmp_path / "included"
    included.write_text("Host *\n    Port 2200\n    User intruder\n")
    config = tmp_path / "config"
    config.write_text("Host elsewhere\n    Include %s\n    User x\nHost *\n    User right\n" % included)
    dest = SSHTunnel("web-1", ssh_config=str(config)).destination
    assert (dest.port, dest.user) == (22, "right")
    applies = tmp_path / "applies"
    applies.write_text("Host web-*\n    Include %s\n" % included)
    assert SSHTunnel("web-1", ssh_config=str(applies)).destination.port == 2200


def test_jump_hosts(fleet, ssh_options, tunnels):
    """A tunnel through one jump host, and through a chain of two, reaches the target."""
    jump = "%s:%d" % (fleet.hosts[1], fleet.port)
    one = tunnels(fleet.hosts[0], options=dataclasses.replace(ssh_options, jump=jump))
    assert one.call(rh.add, 1, 1) == 2
    assert [hop.hostname for hop in one.destination.jumps] == ["127.0.0.3"]
    chain = [jump, "%s:%d" % (fleet.hosts[2], fleet.port)]
    two = tunnels(fleet.hosts[3], options=dataclasses.replace(ssh_options, jump=chain))
    assert len(two.call(rh.big_bytes, 3 * 1024 * 1024)) == 3 * 1024 * 1024


def test_proxyjump_from_config(fleet, tunnels, tmp_path):
    """ProxyJump in ~/.ssh/config is followed, and the jump host gets its own config block."""
    config = tmp_path / "config"
    config.write_text(
        "Host target\n    HostName %s\n    ProxyJump bastion\n"
        "Host bastion\n    HostName %s\n"
        "Host *\n    Port %d\n    User root\n    IdentityFile %s\n    UserKnownHostsFile %s\n"
        % (fleet.hosts[5], fleet.hosts[4], fleet.port, fleet.key, fleet.known_hosts))
    tunnel = tunnels("target", ssh_config=str(config), agent=False)
    assert [j.hostname for j in tunnel.destination.jumps] == [fleet.hosts[4]]
    assert tunnel.call(rh.add, 2, 2) == 4


# -- faults -----------------------------------------------------------------------------------

def test_port_closed(ssh_options, tunnels):
    """Nothing listening on the port: ConnectError says the connection was refused."""
    options = dataclasses.replace(ssh_options, port=free_port())
    with pytest.raises(ConnectError) as info:
        tunnels("127.0.0.2", options=options).call(rh.add, 1, 1)
    assert "refused" in str(info.value)


def test_name_that_does_not_resolve(ssh_options, tunnels):
    """A host name that does not resolve is a clear ConnectError."""
    with pytest.raises(ConnectError) as info:
        tunnels("no-such-host.invalid", options=ssh_options).call(rh.add, 1, 1)
    assert "cannot resolve" in str(info.value)


@pytest.fixture
def blackhole():
    """An address on a veth whose far end, in a namespace this test creates, is down."""
    require(os.getuid() == 0 and os.path.exists("/usr/sbin/ip"), "network namespaces need root and iproute2")
    tag = "%x" % (os.getpid() & 0xFFF)
    ns, near, far = "chopsticks-%s" % tag, "ckn%s" % tag, "ckf%s" % tag
    subnet = 10 + os.getpid() % 200
    commands = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", near, "type", "veth", "peer", "name", far, "netns", ns],
        ["ip", "addr", "add", "10.203.%d.1/30" % subnet, "dev", near],
        ["ip", "link", "set", near, "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield "10.203.%d.2" % subnet
    finally:
        subprocess.run(["ip", "link", "del", near], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_unreachable_host_hits_the_connect_timeout(ssh_options, tunnels, blackhole):
    """A host that never answers fails with ConnectTimeout after connect_timeout, not a hang."""
    options = dataclasses.replace(ssh_options, connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ConnectTimeout) as info:
        tunnels(blackhole, options=options).call(rh.add, 1, 1)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started < 5
    assert "timed out" in str(info.value)


def test_remote_without_python(fleet, ssh_options, tunnels):
    """A remote where the interpreter does not exist fails with PythonNotFound."""
    with pytest.raises(PythonNotFound) as info:
        tunnels(fleet.hosts[0], options=ssh_options, python="/nonexistent/python3").call(rh.add, 1, 1)
    assert "not found" in str(info.value) or "No such file" in str(info.value)


def test_sshd_killing_the_session_mid_call(fleet, ssh_options, tunnels):
    """Killing the sshd child that serves a tunnel fails its calls; other tunnels carry on."""
    victim = tunnels(fleet.hosts[0], options=ssh_options)
    bystander = tunnels(fleet.hosts[1], options=ssh_options)
    assert victim.call(rh.add, 1, 1) == bystander.call(rh.add, 1, 1) == 2
    pending = victim.call_async(rh.sleep_and_return, 30, "never")
    gevent.sleep(0.2)
    client_port = victim._conn.pipe.link.sock.getsockname()[1]
    assert fleet.kill_session_of(client_port)
    with pytest.raises(TunnelClosed) as info:
        pending.result(timeout=10)
    assert "connection was lost" in str(info.value) or "exited" in str(info.value)
    assert bystander.call(rh.add, 2, 2) == 4
    assert victim.call(rh.add, 3, 3) == 6  # reconnects


def test_keepalive_fails_a_call_to_a_host_that_froze(fleet, ssh_options, tunnels):
    """A host that stops answering mid-call without a RST (its sshd SIGSTOPped) fails the call with
    TunnelClosed naming the host and the keepalive, within the keepalive period; others carry on."""
    options = dataclasses.replace(ssh_options, keepalive_interval=1, keepalive_count_max=2)
    victim = tunnels(fleet.hosts[4], options=options)
    bystander = tunnels(fleet.hosts[5], options=options)
    assert victim.call(rh.add, 1, 1) == bystander.call(rh.add, 1, 1) == 2
    frozen = fleet.sessions_of(victim._conn.pipe.link.sock.getsockname()[1])
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        pending = victim.call_async(rh.sleep_and_return, 120, "never")
        started = time.monotonic()
        with pytest.raises(TunnelClosed) as info:
            pending.result(timeout=60)
        elapsed = time.monotonic() - started
        assert bystander.call(rh.add, 2, 2) == 4
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert str(info.value).startswith("[%s] no answer to keepalive in 2 s" % fleet.hosts[4])
    assert elapsed < 20  # 2-3 s when the machine is idle


def test_keepalive_keeps_a_live_quiet_host(fleet, ssh_options, tunnels):
    """A host that answers keepalives stays connected through a call silent for several periods."""
    options = dataclasses.replace(ssh_options, keepalive_interval=1, keepalive_count_max=2)
    tunnel = tunnels(fleet.hosts[4], options=options)
    pid = tunnel.call(os.getpid)
    assert tunnel.call(rh.sleep_and_return, 5, "still here") == "still here"  # 5 silent seconds
    assert tunnel.call(os.getpid) == pid  # the same agent: never reconnected


def test_login_shell_banner(fleet, ssh_options, tunnels, capfd):
    """A login shell that prints to stdout before the agent starts does not break the tunnel."""
    rc = os.path.join(fleet.home, ".bashrc")
    with open(rc, "w") as f:
        f.write("echo 'Welcome to the fleet'\n")
    try:
        assert tunnels(fleet.hosts[2], options=ssh_options).call(rh.add, 1, 1) == 2
    finally:
        os.unlink(rc)
    assert "Welcome to the fleet" in capfd.readouterr().err


def test_bad_options_are_clear_errors():
    """Bad ports, policies and option names are refused when the tunnel is made."""
    with pytest.raises(ValueError):
        SSHTunnel("h", port=70000, ssh_config="")
    with pytest.raises(ValueError):
        SSHTunnel("h", host_key_policy="sometimes", ssh_config="")
    with pytest.raises(TypeError):
        SSHTunnel("h", colour="blue")
    with pytest.raises(ValueError):
        SSHTunnel("user@:22", ssh_config="")


def test_many_tunnels_through_a_strict_maxstartups(tunnels, no_leaks):
    """60 tunnels connect at once to an sshd that drops connections past 5 unauthenticated."""
    from chopsticks.transports.ssh_options import SSHOptions
    from fleet import Fleet
    with Fleet(60, extra_config="MaxStartups 5:100:5\n") as strict:
        options = SSHOptions(port=strict.port, key=strict.key, known_hosts=strict.known_hosts,
                             ssh_config="", agent=False)
        made = [tunnels(host, options=options) for host in strict.hosts]
        jobs = [gevent.spawn(t.call, rh.add, i, i) for i, t in enumerate(made)]
        gevent.joinall(jobs, timeout=90)
        assert [j.value for j in jobs] == [2 * i for i in range(60)], [j.exception for j in jobs if j.exception][:3]
        for tunnel in made:
            tunnel.close()
