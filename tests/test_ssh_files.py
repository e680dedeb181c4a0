"""known_hosts and ~/.ssh/config parsing: pure logic, checked on files written by the tests."""

import base64
import hashlib
import hmac
import os

from chopsticks.transports import known_hosts, ssh_config
from chopsticks.transports.ssh_options import SSHOptions, resolve


def _blob(kind, payload):
    name = kind.encode()
    return len(name).to_bytes(4, "big") + name + payload


KEY = _blob("ssh-ed25519", b"k" * 32)
OTHER = _blob("ssh-ed25519", b"o" * 32)
RSA = _blob("ssh-rsa", b"r" * 64)


def _line(patterns, key, marker=""):
    return "%s%s %s %s\n" % (marker + " " if marker else "", patterns, known_hosts.key_type_of(key),
                             base64.b64encode(key).decode())


def _hashed(name):
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return "|1|%s|%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def test_lookup_outcomes():
    """Exact key: match; other key of the same type: changed; only other types: unknown."""
    entries = known_hosts.parse([_line("web-1,10.0.0.1", KEY), _line("db-*", RSA), "# comment\n", "junk\n"])
    assert known_hosts.check(entries, "web-1", 22, KEY) == known_hosts.MATCH
    assert known_hosts.check(entries, "10.0.0.1", 22, OTHER) == known_hosts.CHANGED
    assert known_hosts.check(entries, "db-9", 22, KEY) == known_hosts.UNKNOWN
    assert known_hosts.check(entries, "web-2", 22, KEY) == known_hosts.UNKNOWN


def test_ports_brackets_wildcards_and_negation():
    """[host]:port names, * and ? wildcards, and !negation as OpenSSH matches them."""
    entries = known_hosts.parse([_line("[10.1.*]:2222,![10.1.0.9]:2222", KEY), _line("h?st", OTHER)])
    assert known_hosts.check(entries, "10.1.3.4", 2222, KEY) == known_hosts.MATCH
    assert known_hosts.check(entries, "10.1.3.4", 22, KEY) == known_hosts.UNKNOWN
    assert known_hosts.check(entries, "10.1.0.9", 2222, KEY) == known_hosts.UNKNOWN
    assert known_hosts.check(entries, "host", 22, OTHER) == known_hosts.MATCH
    assert known_hosts.check(entries, "hoost", 22, OTHER) == known_hosts.UNKNOWN


def test_hashed_names_and_revoked_keys():
    """|1|salt|hash entries match their name only; @revoked refuses a key everywhere."""
    entries = known_hosts.parse([_line(_hashed("[web-1]:2200"), KEY), _line("*", OTHER, "@revoked")])
    assert known_hosts.check(entries, "web-1", 2200, KEY) == known_hosts.MATCH
    assert known_hosts.check(entries, "web-2", 2200, KEY) == known_hosts.UNKNOWN
    assert known_hosts.check(entries, "web-1", 2200, OTHER) == known_hosts.REVOKED


def test_append_then_read_sees_the_new_key(tmp_path):
    """accept-new's append creates the file and is read back at once."""
    path = str(tmp_path / "ssh" / "known_hosts")
    known_hosts.append(path, "web-1", 2222, KEY)
    assert known_hosts.check(known_hosts.read([path]), "web-1", 2222, KEY) == known_hosts.MATCH
    known_hosts.append(path, "web-2", 22, OTHER)
    assert known_hosts.check(known_hosts.read([path]), "web-2", 22, OTHER) == known_hosts.MATCH


def test_config_first_value_wins_and_identity_files_accumulate(tmp_path):
    """OpenSSH's rules: first obtained value wins (an Include's too), IdentityFile accumulates."""
    extra = tmp_path / "extra.conf"
    extra.write_text("Host web-*\n  User included\n  IdentityFile ~/.ssh/from-include\n")
    config = tmp_path / "config"
    config.write_text(
        "Include %s\n"
        "Match host web-1\n  User from-match\n"
        "Host web-* !web-9\n  HostName %%h.example.com\n  Port=2200\n  IdentityFile \"/keys/web key\"\n"
        "Host *\n  User fallback\n  Port 22\n  IdentityFile /keys/default\n  StrictHostKeyChecking accept-new\n"
        % extra)
    options = ssh_config.lookup("web-1", [str(config)])
    assert options["user"] == "included"
    assert options["port"] == 2200
    assert options["hostname"] == "%h.example.com"
    assert options["identityfile"] == ["~/.ssh/from-include", "/keys/web key", "/keys/default"]
    assert ssh_config.lookup("web-9", [str(config)])["port"] == 22
    dest = resolve("web-1", SSHOptions(ssh_config=str(config)))
    assert (dest.hostname, dest.port, dest.user, dest.host_key_policy) == ("web-1.example.com", 2200, "included",
                                                                            "accept-new")
    assert dest.keys[1] == "/keys/web key"


def test_explicit_options_beat_the_config(tmp_path):
    """Options given in code win over ~/.ssh/config; user@host:port wins over both."""
    config = tmp_path / "config"
    config.write_text("Host *\n  User cfg\n  Port 2200\n  IdentityFile /keys/cfg\n")
    dest = resolve("web-1", SSHOptions(ssh_config=str(config), user="code", key="/keys/code"))
    assert (dest.user, dest.port, dest.keys) == ("code", 2200, ("/keys/code",))
    dest = resolve("ops@web-1:2022", SSHOptions(ssh_config=str(config), user="code"))
    assert (dest.user, dest.port) == ("ops", 2022)


def test_secrets_stay_out_of_reprs():
    """Passwords and passphrases never show in a repr."""
    options = SSHOptions(password="hunter2", passphrase="s3cret", user="u")
    assert "hunter2" not in repr(options) and "s3cret" not in repr(options)
    assert "password=***" in repr(options)
    dest = resolve("h", SSHOptions(password="hunter2", ssh_config=""))
    assert "hunter2" not in repr(dest)
