"""SSH host key verification and authentication on a freshly handshaken libssh2 session. Transport layer."""

import os
from typing import List

from ssh2 import exceptions as ssh2_errors
from ssh2.session import Session

from chopsticks import known_hosts
from chopsticks.errors import AuthenticationFailed, HostKeyChanged, HostKeyError, UnknownHostKey
from chopsticks.transports.libssh2 import Deadline, Waiter, describe, retry
from chopsticks.transports.ssh_options import Destination


def verify_host_key(session: Session, dest: Destination) -> None:
    key, _ = session.hostkey()
    policy = dest.host_key_policy
    if policy == "off":
        return
    entries = known_hosts.read(dest.known_hosts)
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
                " or ".join(dest.known_hosts)))
    if policy == "accept-new" and dest.known_hosts:
        known_hosts.append(dest.known_hosts[0], dest.hostname, dest.port, key)
        return
    raise UnknownHostKey(
        "[%s] the host key of %s (%s %s) is not in %s and the host key policy is strict; add it "
        "(ssh-keyscan), or use host_key_policy='accept-new'" % (
            dest.name, shown, known_hosts.key_type_of(key), known_hosts.fingerprint(key),
            " or ".join(dest.known_hosts) or "any known_hosts file"))


def authenticate(session: Session, wire: Waiter, dest: Destination, deadline: Deadline) -> None:
    tried: List[str] = []
    for key in dest.keys:
        if not os.path.isfile(key):
            if key in dest.explicit_keys:
                raise AuthenticationFailed("[%s] the key file %s does not exist" % (dest.name, key))
            continue
        try:
            retry(session, wire, deadline, dest.name, session.userauth_publickey_fromfile,
                  dest.user, key, dest.passphrase or "")
            return
        except ssh2_errors.FileError as exc:
            raise AuthenticationFailed("[%s] cannot use the key %s: wrong passphrase, or not a private key "
                                       "libssh2 reads (%s)" % (dest.name, key, describe(exc))) from exc
        except (ssh2_errors.AuthenticationError, ssh2_errors.PublicKeyError,
                ssh2_errors.PublickeyUnverifiedError):
            tried.append("key " + key)
    if dest.agent and os.environ.get("SSH_AUTH_SOCK"):
        if _agent_auth(session, wire, dest, deadline):
            return
        tried.append("ssh-agent")
    if dest.password is not None:
        try:
            retry(session, wire, deadline, dest.name, session.userauth_password, dest.user, dest.password)
            return
        except (ssh2_errors.AuthenticationError, ssh2_errors.PasswordExpiredError):
            tried.append("password")
    raise AuthenticationFailed("[%s] %s@%s refused every credential tried: %s" % (
        dest.name, dest.user, dest.hostname, ", ".join(tried) or "none were given or found"))


def _agent_auth(session: Session, wire: Waiter, dest: Destination, deadline: Deadline) -> bool:
    try:
        agent = session.agent_init()
        agent.connect()
    except ssh2_errors.SSH2Error:
        return False
    try:
        for identity in agent.get_identities():
            try:
                retry(session, wire, deadline, dest.name, agent.userauth, dest.user, identity)
                return True
            except (ssh2_errors.AgentAuthenticationError, ssh2_errors.AuthenticationError):
                continue
    except ssh2_errors.SSH2Error:
        return False
    finally:
        try:
            agent.disconnect()
        except ssh2_errors.SSH2Error:
            pass
    return False
