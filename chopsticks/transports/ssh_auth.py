"""SSH host key verification and authentication on a freshly handshaken libssh2 session. Transport layer."""

import base64
import binascii
import os
import stat
import struct
from typing import List, NamedTuple, Optional, Sequence

from ssh2.session import Session

from chopsticks.transports import known_hosts
from chopsticks.errors import AuthenticationFailed, HostKeyChanged, HostKeyError, UnknownHostKey
from chopsticks.transports.libssh2 import REFUSED, UNREADABLE_KEY, SSH2Error, Deadline, Waiter, describe, retry
from chopsticks.transports.ssh_options import Destination


def verify_host_key(session: Session, dest: Destination) -> None:
    key, _ = session.hostkey()
    policy = dest.host_key_policy
    if policy == "off":
        return
    files = dest.known_hosts + dest.global_known_hosts  # the user's files, then the system's
    entries = known_hosts.read(files)
    outcome = known_hosts.check(entries, dest.hostname, dest.port, key)
    if outcome == known_hosts.MATCH:
        return
    shown = known_hosts.host_name(dest.hostname, dest.port)
    if outcome == known_hosts.REVOKED:
        raise HostKeyError("[%s] the host key of %s (%s) is marked @revoked in known_hosts" % (
            dest.name, shown, known_hosts.fingerprint(key)))
    if outcome == known_hosts.CHANGED:
        raise HostKeyChanged(
            "[%s] THE HOST KEY OF %s HAS CHANGED: it now presents %s %s, which does not match the key "
            "recorded in %s. Someone could be intercepting the connection, or the host was reinstalled; "
            "if the new key is right, remove the old line from known_hosts." % (
                dest.name, shown, known_hosts.key_type_of(key), known_hosts.fingerprint(key),
                " or ".join(files)))
    if policy == "accept-new" and dest.known_hosts:
        known_hosts.append(dest.known_hosts[0], dest.hostname, dest.port, key, hashed=dest.hash_known_hosts)
        return
    raise UnknownHostKey(
        "[%s] the host key of %s (%s %s) is not in %s and the host key policy is strict; add it "
        "(ssh-keyscan), or use host_key_policy='accept-new'" % (
            dest.name, shown, known_hosts.key_type_of(key), known_hosts.fingerprint(key),
            " or ".join(files) or "any known_hosts file"))


# What a key file that cannot be used is noted as; the login goes on with the next credential.
UNPROTECTED = ("UNPROTECTED PRIVATE KEY FILE! Permissions %04o for '%s' are too open: private key files "
               "must not be accessible by others, so this key is ignored (fix: chmod 600 '%s')")


class Credential(NamedTuple):
    """What a login succeeded with, for another session to the same host (``transports.libssh``)."""

    kind: str  # "key", "agent" or "password"
    key: Optional[str] = None  # the key file, for "key"


def authenticate(session: Session, wire: Waiter, dest: Destination, deadline: Deadline) -> Credential:
    """Log in as OpenSSH does: every credential in turn, and a key that cannot be used is only noted.

    Keys given explicitly come first, then the agent, then the default key files (so a
    passphrase-protected default key that the agent holds never asks for its passphrase),
    then the password. With IdentitiesOnly the agent offers only its copies of those key
    files (matched by public key: ``KEY.pub``, or the key file's own header). The error
    names everything tried and why each failed."""
    tried: List[str] = []

    def files(keys: Sequence[str]) -> Optional[Credential]:
        for key in keys:
            if _key_file(session, wire, dest, deadline, key, tried):
                return Credential("key", key)
        return None

    defaults = [key for key in dest.keys if key not in dest.explicit_keys]
    credential = files(dest.explicit_keys) or (_agent(session, wire, dest, deadline, tried)
                                               and Credential("agent")) or files(defaults)
    if credential:
        return credential
    if dest.password is not None:
        try:
            retry(session, wire, deadline, dest.name, session.userauth_password, dest.user, dest.password)
            return Credential("password")
        except REFUSED:
            tried.append("password: refused")
    raise AuthenticationFailed("[%s] %s@%s refused every credential tried: %s" % (
        dest.name, dest.user, dest.hostname, "; ".join(tried) or "none were given or found"))


def _key_file(session: Session, wire: Waiter, dest: Destination, deadline: Deadline, key: str,
              tried: List[str]) -> bool:
    explicit = key in dest.explicit_keys
    problem = _unusable(key)
    if problem is not None:
        if explicit or problem != "does not exist":  # a default key that is not there is not news
            tried.append("key %s: %s" % (key, problem))
        return False
    try:
        retry(session, wire, deadline, dest.name, session.userauth_publickey_fromfile,
              dest.user, key, dest.passphrase or "")
        return True
    except UNREADABLE_KEY as exc:
        tried.append("key %s: cannot be loaded (wrong passphrase%s, or not a private key libssh2 reads: %s)" % (
            key, "" if dest.passphrase else ": none was given", describe(exc)))
    except REFUSED:
        tried.append("key %s: refused by the server" % key)
    return False


def _unusable(key: str) -> Optional[str]:
    """Why a key file cannot be used before it is read, or None."""
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return "cannot be read (%s)" % (exc.strerror or exc)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a private key file"
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        return UNPROTECTED % (stat.S_IMODE(st.st_mode), key, key)
    return None


def _agent(session: Session, wire: Waiter, dest: Destination, deadline: Deadline, tried: List[str]) -> bool:
    if not dest.agent:
        return False
    if not os.environ.get("SSH_AUTH_SOCK"):
        tried.append("ssh-agent: SSH_AUTH_SOCK is not set")
        return False
    try:
        agent = session.agent_init()
        agent.connect()
    except SSH2Error as exc:
        tried.append("ssh-agent: cannot connect to %s (%s)" % (os.environ["SSH_AUTH_SOCK"], describe(exc)))
        return False
    try:
        identities = agent.get_identities()
        if dest.identities_only:  # only the agent's copies of the configured keys
            wanted = {blob for blob in map(public_blob, dest.keys) if blob is not None}
            offered = len(identities)
            identities = [identity for identity in identities if bytes(identity.blob) in wanted]
            if offered and not identities:
                tried.append("ssh-agent: holds none of the keys listed (IdentitiesOnly)")
                return False
        for identity in identities:
            try:
                retry(session, wire, deadline, dest.name, agent.userauth, dest.user, identity)
                return True
            except REFUSED:
                tried.append("ssh-agent key %r: refused by the server" % _comment(identity))
        if not identities:
            tried.append("ssh-agent: holds no keys")
    except SSH2Error as exc:
        tried.append("ssh-agent: %s" % describe(exc))
    finally:
        try:
            agent.disconnect()
        except SSH2Error:
            pass
    return False


def public_blob(key: str) -> Optional[bytes]:
    """The public key of a private key file: from ``KEY.pub``, else from the unencrypted header
    of an OpenSSH-format private key; None if neither says."""
    try:
        with open(key + ".pub", encoding="ascii", errors="replace") as f:
            return base64.b64decode(f.read().split()[1], validate=True)
    except (OSError, IndexError, ValueError, binascii.Error):
        pass
    try:
        with open(key, encoding="ascii", errors="replace") as f:
            text = f.read(1 << 16)
    except OSError:
        return None
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin not in text or end not in text:
        return None
    try:
        data = base64.b64decode("".join(text.split(begin, 1)[1].split(end, 1)[0].split()))
        magic = b"openssh-key-v1\0"
        if not data.startswith(magic):
            return None
        at = len(magic)
        for _ in range(3):  # cipher name, kdf name, kdf options
            (size,) = struct.unpack(">I", data[at:at + 4])
            at += 4 + size
        at += 4  # the number of keys; the first public key follows
        (size,) = struct.unpack(">I", data[at:at + 4])
        blob = data[at + 4:at + 4 + size]
        return blob if len(blob) == size else None
    except (ValueError, binascii.Error, struct.error):
        return None


def _comment(identity) -> str:
    comment = identity.comment
    return comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
