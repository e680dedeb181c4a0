"""A fleet of SSH hosts on loopback: one real OpenSSH sshd, reached as 127.0.0.2, 127.0.0.3 ...

Used by the tests, the benchmarks, and people (``scripts/fleet --hosts 20`` starts one and
prints how to reach it). Everything lives in a fresh temporary directory: a host key and
client keys generated with ssh-keygen for this run, authorized_keys that give each login
an empty HOME (so the remote user's shell start-up files cost nothing), a known_hosts file
for the fleet, and an ssh_config. Traffic never leaves 127.0.0.0/8: sshd listens on
0.0.0.0 (so every 127.x.y.z reaches it) and refuses logins from anywhere else.
"""

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Set, Union

SSHD = "/usr/sbin/sshd"
KEY_TYPES = ("ed25519", "ecdsa", "rsa")
PASSPHRASE = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback_hosts(count: int) -> List[str]:
    """127.0.0.2, 127.0.0.3, ... then 127.0.1.1 ..., skipping .0 and .255."""
    hosts = []
    third, fourth = 0, 2
    while len(hosts) < count:
        hosts.append("127.0.%d.%d" % (third, fourth))
        fourth += 1
        if fourth == 255:
            third, fourth = third + 1, 1
    return hosts


class Fleet:
    """One sshd serving ``count`` loopback addresses; ``start()``, ``stop()``, context manager."""

    def __init__(self, count: int = 1, workdir: Optional[str] = None, extra_config: str = "",
                 users: Optional[List[str]] = None):
        if count < 1:
            raise ValueError("a fleet needs at least one host")
        self.hosts = loopback_hosts(count)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="chopsticks-fleet-")
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.keys: Dict[str, str] = {}
        self.home = os.path.join(self.dir, "home")
        self.extra_config = extra_config
        self.users = [self.user] + list(users or [])

    # -- paths -------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @property
    def key(self) -> str:
        """The default client key (ed25519, no passphrase)."""
        return self.keys["ed25519"]

    @property
    def known_hosts(self) -> str:
        return self.path("known_hosts")

    @property
    def ssh_config(self) -> str:
        return self.path("ssh_config")

    # -- lifecycle ---------------------------------------------------------------------

    def _keygen(self, path: str, kind: str, passphrase: str = "") -> None:
        args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", path, "-C", "chopsticks-fleet"]
        if kind == "rsa":
            args[4:4] = ["-b", "2048"]
        subprocess.run(args, check=True, stdin=subprocess.DEVNULL)

    def start(self, timeout: float = 20.0) -> "Fleet":
        if not os.path.exists(SSHD):
            raise RuntimeError("%s is missing: install openssh-server (scripts/install does)" % SSHD)
        os.makedirs(self.home, exist_ok=True)
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self._keygen(self.path("host_ed25519"), "ed25519")
        for kind in KEY_TYPES:
            self.keys[kind] = self.path("id_" + kind)
            self._keygen(self.keys[kind], kind)
        self.keys["passphrase"] = self.path("id_ed25519_passphrase")
        self._keygen(self.keys["passphrase"], "ed25519", PASSPHRASE)
        options = 'environment="HOME=%s" ' % self.home
        with open(self.path("authorized_keys"), "w") as out:
            for path in self.keys.values():
                with open(path + ".pub") as pub:
                    out.write(options + pub.read())
        # readable by other users the fleet lets in: sshd reads it as the user logging in
        os.chmod(self.path("authorized_keys"), 0o644)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        with open(self.path("sshd_config"), "w") as f:
            allow = " ".join("%s@127.*" % user for user in self.users)
            f.write(SSHD_CONFIG.format(port=self.port, dir=self.dir, allow=allow) + self.extra_config
                    + "\n" + SSHD_DEFAULTS)
        with open(self.path("host_ed25519.pub")) as pub:
            host_key = " ".join(pub.read().split()[:2])
        with open(self.known_hosts, "w") as f:
            for host in self.hosts:
                f.write("[%s]:%d %s\n" % (host, self.port, host_key))
        with open(self.ssh_config, "w") as f:
            f.write(SSH_CONFIG.format(port=self.port, user=self.user, key=self.key,
                                      known_hosts=self.known_hosts))
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", self.path("sshd_config"), "-E", self.path("sshd.log")],
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("sshd exited with status %s: %s" % (self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection((self.hosts[0], self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not answer on port %d: %s" % (self.port, self.log_tail()))
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.path("sshd.log")) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def kill_session_of(self, client_port: int) -> bool:
        """Kill the sshd child serving the TCP connection from ``client_port`` (a network fault)."""
        for pid in self.sessions_of(client_port):
            os.kill(pid, signal.SIGKILL)
            return True
        return False

    def sessions_of(self, client_port: int) -> List[int]:
        """PIDs of the sshd processes that hold the TCP connection from ``client_port``."""
        return [pid for pid in children_of(self.proc.pid if self.proc else -1)
                if _process_has_peer_port(pid, client_port)]

    def stop(self) -> None:
        if self.proc is not None:
            for pid in children_of(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the sshd child: get SIGTERM when whoever started the fleet dies (Linux prctl), so a
    killed test run or benchmark leaves no sshd behind."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def children_of(parent: int, *, zombies: bool = True) -> List[int]:
    """PIDs of ``parent``'s child processes (from /proc), optionally without zombies."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and (zombies or fields[0] != "Z"):
                kids.append(int(entry))
    return kids


def shard_pids(parent: int) -> List[int]:
    """PIDs of ``parent``'s chopsticks shard processes (their command line names
    ``chopsticks.shards``): for the shard tests and bench."""
    found = []
    for pid in children_of(parent):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"chopsticks.shards" in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def _socket_inodes(pid: Union[int, str]) -> Set[str]:
    """The inodes of the sockets ``pid`` (or ``"self"``) holds."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%s/fd" % pid):
            try:
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _tcp_sockets() -> Iterator[List[str]]:
    """The fields of each line of /proc/net/tcp (IPv4)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            yield line.split()


def _process_has_peer_port(pid: int, port: int) -> bool:
    """Whether ``pid`` holds a TCP socket whose peer is on local ``port``."""
    inodes = _socket_inodes(pid)
    return any(int(fields[2].split(":")[1], 16) == port and fields[9] in inodes for fields in _tcp_sockets())


def connections_to(host: str, port: int, pid: Union[int, str] = "self") -> int:
    """Established TCP connections ``pid`` (default: this process) holds to ``host``:``port``:
    the logins a client made to one fleet address and has not closed."""
    inodes = _socket_inodes(pid)
    wanted = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    return sum(1 for fields in _tcp_sockets() if fields[2] == wanted and fields[3] == "01" and fields[9] in inodes)


SSHD_CONFIG = """\
Port {port}
ListenAddress 0.0.0.0
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers {allow}
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitUserEnvironment HOME
UseDNS no
PrintMotd no
PrintLastLog no
MaxSessions 1000
MaxAuthTries 10
LoginGraceTime 60
LogLevel ERROR
Subsystem sftp internal-sftp
"""
# sshd takes the first value of a keyword, so defaults that callers may override go last.
SSHD_DEFAULTS = """\
MaxStartups 3000
"""

SSH_CONFIG = """\
Host 127.*
    Port {port}
    User {user}
    IdentityFile {key}
    UserKnownHostsFile {known_hosts}
    StrictHostKeyChecking yes
"""


class Stopped(Exception):
    """SIGTERM or SIGHUP: stop the fleet as Ctrl-C does."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description="Start a fleet of SSH hosts on loopback and wait.")
    parser.add_argument("--hosts", type=int, default=10, help="number of hosts (default 10)")
    args = parser.parse_args()
    if args.hosts < 1:
        parser.error("--hosts must be at least 1")
    for signum in (signal.SIGTERM, signal.SIGHUP):  # kill, a closed terminal: clean up as for Ctrl-C
        signal.signal(signum, _stop)
    fleet = Fleet(args.hosts)
    try:
        fleet.start()
        hosts_file = fleet.path("hosts.txt")
        with open(hosts_file, "w") as f:
            f.write("\n".join(fleet.hosts) + "\n")
        print("sshd (pid %d) serves %d hosts: %s ... %s, port %d" % (
            fleet.proc.pid if fleet.proc else 0, len(fleet.hosts), fleet.hosts[0], fleet.hosts[-1], fleet.port))
        print("hosts file:   %s" % hosts_file)
        print("try:          ssh -F %s %s python3 --version" % (fleet.ssh_config, fleet.hosts[0]))
        print("from Python:  Tunnel(%r, port=%d, key=%r, known_hosts=%r)" % (
            fleet.hosts[0], fleet.port, fleet.key, fleet.known_hosts))
        print("Ctrl-C (or SIGTERM) stops the fleet and deletes %s" % fleet.dir)
        sys.stdout.flush()
        while True:
            signal.pause()
    except (KeyboardInterrupt, Stopped):
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second one must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
