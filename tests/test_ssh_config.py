"""OpenSSH client configuration as ``ssh`` reads it: our resolution checked against ``ssh -G``.

Each configuration below is written to a temporary file and resolved for several hosts both by
chopsticks and by the OpenSSH client installed here (``ssh -G -F FILE TARGET`` prints what
ssh would use); every option chopsticks honours must come out the same.
"""

import os
import pwd
import shutil
import subprocess

import pytest
import structlog
from structlog.testing import capture_logs

from chopsticks.transports import ssh_config, ssh_config_file, ssh_options
from chopsticks.transports.ssh_config import ConfigError, Source
from chopsticks.transports.ssh_options import SSHOptions, resolve
from conftest import require

ME = pwd.getpwuid(os.getuid()).pw_name
OPENSSH_GLOBAL_KNOWN_HOSTS = ssh_options.GLOBAL_KNOWN_HOSTS  # at import: before conftest points it elsewhere

CONFIGS = {
    "host": ("""
Host web-* !web-9
    HostName %h.Example.com
    User deploy
    IdentityFile ~/.ssh/web_%r
Host WEB-UPPER "quoted name"
    User upper
Host web-9
    Port=2209
    IdentityFile "/keys/web 9"
    User = nine # a comment
Host *
    User fallback
    Port 2200
    IdentityFile ~/.ssh/all_%h
    IdentityFile ~/.ssh/web_%r
""", ["web-1", "web-9", "WEB-UPPER", "web-upper", "ops@web-2", "db-1"]),
    "match": ("""
Host alias
    HostName Real-%h.Example.COM
Match host real-alias.example.com
    Port 2201
Match originalhost alias user {me}
    User by-originalhost
Match !originalhost alias,db-* host !other-*,*
    User not-alias
Match user deploy
    IdentityFile ~/.ssh/deploy_%n
    IdentitiesOnly yes
Match localuser={me} !user deploy
    ServerAliveInterval 1m30s
Match all
    ServerAliveCountMax 7
    ConnectTimeout 45
""", ["alias", "deploy@alias", "db-1", "other-1", "deploy@web-1", "web-2"]),
    "final": ("""
Host short
    HostName long.example.org
Match final host *.example.org
    User late
Match canonical
    IdentityFile ~/.ssh/canonical
Host long.example.org
    Port 2300
    IdentityFile ~/.ssh/long
Host *
    IdentityFile ~/.ssh/every
""", ["short", "long.example.org", "other"]),
    "include": ("""
Include {tmp}/conf.d/*.conf
Host db-*
    Include {tmp}/elsewhere.conf
    Port 2401
Host *
    User last
""", ["web-1", "db-1", "other"]),
    "proxy": ("""
Host pj-first
    ProxyJump bastion:2222
    ProxyCommand nc %h %p
Host pc-first
    ProxyCommand python3 -c "print('x')" %h  %p %r %n %% # kept, as ssh keeps it
    ProxyJump bastion
Host pc-none
    ProxyCommand none
    ProxyJump bastion
Host pj-none
    ProxyJump none
    ProxyCommand nc %h %p
Host pj-none-twice
    ProxyJump none
    ProxyJump bastion
    ProxyCommand nc -v %h %p
Host *
    ProxyCommand ssh -W %h:%p gateway
""", ["pj-first", "pc-first", "pc-none", "pj-none", "pj-none-twice", "plain"]),
    "files": ("""
Host kh-*
    UserKnownHostsFile ~/kh/%h-%p-%r "/with space/%n" %d/%u/%C/%i/%L/%l/%k
    GlobalKnownHostsFile /g/one /g/two
    StrictHostKeyChecking accept-new
Host none-*
    UserKnownHostsFile none
    StrictHostKeyChecking no
    GlobalKnownHostsFile none
Host *
    ConnectTimeout 1m5s
    HashKnownHosts yes
    StrictHostKeyChecking true
""", ["kh-1", "ops@KH-2", "none-1", "other"]),
}
INCLUDED = {
    "conf.d/10-web.conf": "Host web-*\n    User from-include\nMatch all\n    Port 2400\n",
    "conf.d/20-all.conf": "IdentityFile ~/.ssh/included\n",
    "elsewhere.conf": "Host *\n    User never\n    IdentityFile ~/.ssh/never\n",
}
# How ssh -G prints StrictHostKeyChecking
STRICT = {"yes": "true", "true": "true", "ask": "ask", "accept-new": "accept-new", "no": "false", "off": "false",
          "false": "false"}


@pytest.fixture
def ssh_client(monkeypatch):
    """The OpenSSH client, with HOME where ssh looks (its passwd entry), so ``~`` agrees."""
    require(shutil.which("ssh"), "the OpenSSH client is not installed (scripts/install installs it)")
    monkeypatch.setenv("HOME", pwd.getpwuid(os.getuid()).pw_dir)
    return shutil.which("ssh")


def ssh_g(ssh, config, target):
    """What ``ssh -G`` resolves: keyword -> list of values (one per line it printed)."""
    out = subprocess.run([ssh, "-G", "-F", str(config), target], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=30)
    assert out.returncode == 0, out.stderr
    printed = {}
    for line in out.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        printed.setdefault(keyword, []).append(value)
    return printed


def ours(target, options, paths):
    """The same keywords as chopsticks resolves them (raw where ssh -G prints raw values)."""
    user, _, alias = target.rpartition("@")
    raw = ssh_config.lookup(alias, paths, user=user or None)
    dest = resolve(target, options)
    found = {
        "user": [dest.user], "hostname": [dest.hostname], "port": [str(dest.port)],
        "identitiesonly": ["yes" if dest.identities_only else "no"],
        "userknownhostsfile": [" ".join(dest.known_hosts) or "none"],
        "globalknownhostsfile": [" ".join(raw.get("globalknownhostsfile", OPENSSH_GLOBAL_KNOWN_HOSTS))],
        "serveraliveinterval": [str(raw.get("serveraliveinterval", 0))],
        "serveralivecountmax": [str(raw.get("serveralivecountmax", 3))],
        "connecttimeout": [str(raw.get("connecttimeout", "none"))],
        "hashknownhosts": ["yes" if dest.hash_known_hosts else "no"],
        "proxycommand": [raw["proxycommand"]] if raw.get("proxycommand", "none") != "none" else None,
        "proxyjump": [raw["proxyjump"]] if raw.get("proxyjump", "none") != "none" else None,
    }
    if "identityfile" in raw:  # otherwise ssh -G lists its own defaults
        found["identityfile"] = raw["identityfile"]
    if "stricthostkeychecking" in raw:
        found["stricthostkeychecking"] = [STRICT[raw["stricthostkeychecking"]]]
    return found


def write(tmp_path, name, text):
    for rel, included in INCLUDED.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(included)
    path = tmp_path / name
    path.write_text(text.format(me=ME, tmp=tmp_path))
    return path


def compare(ssh, config, target, options, paths):
    expected, found = ssh_g(ssh, config, target), ours(target, options, paths)
    differ = {keyword: (expected.get(keyword), value) for keyword, value in found.items()
              if expected.get(keyword) != value}
    assert not differ, "%s: ssh -G vs chopsticks: %r" % (target, differ)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resolution_matches_ssh_G(ssh_client, tmp_path, name):
    """Host (patterns, negation, case, quoting), Match host/originalhost/user/localuser/all/final/
    canonical (negated, lists), Include, first-match-wins, ProxyJump/ProxyCommand, tokens, known
    hosts files, keepalive and timeouts resolve exactly as ``ssh -G`` prints them."""
    text, targets = CONFIGS[name]
    config = write(tmp_path, "config", text)
    for target in targets:
        compare(ssh_client, config, target, SSHOptions(ssh_config=str(config)), [str(config)])


def test_the_system_file_comes_after_the_users(ssh_client, tmp_path, monkeypatch):
    """With no file named, ~/.ssh/config is read, then the system file, first value winning, as
    ssh reads them (checked against ssh -G on a file that includes the two in that order)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    user_file = home / ".ssh" / "config"
    user_file.write_text("Host web-*\n    User from-user\nHost *\n    ServerAliveInterval 9\n"
                         "    UserKnownHostsFile /kh/user\n")
    system_file = tmp_path / "etc" / "ssh_config"
    system_file.parent.mkdir()
    system_file.write_text("Host *\n    User from-system\n    Port 2500\n    ServerAliveInterval 99\n"
                           "    IdentityFile ~/.ssh/system\n    HashKnownHosts yes\n")
    both = tmp_path / "both"
    both.write_text("Include %s\nInclude %s\n" % (user_file, system_file))
    monkeypatch.setattr(ssh_config, "SYSTEM_CONFIG", str(system_file))
    for target in ("web-1", "db-1"):
        expected = ssh_g(ssh_client, both, target)
        monkeypatch.setenv("HOME", str(home))
        found = ours(target, SSHOptions(), None)
        monkeypatch.setenv("HOME", pwd.getpwuid(os.getuid()).pw_dir)
        for keyword in ("user", "port", "serveraliveinterval", "identityfile", "userknownhostsfile", "hashknownhosts"):
            assert expected[keyword] == found[keyword], (target, keyword)
    # given a file (ssh -F), the system file is not read
    assert resolve("web-1", SSHOptions(ssh_config=str(user_file))).port == 22


def test_relative_includes_and_system_known_hosts(tmp_path, monkeypatch):
    """A relative Include in the system file is found beside it (/etc/ssh for the real one), in
    the user's file under ~/.ssh; the global known_hosts default follows the user's files."""
    home, etc = tmp_path / "home", tmp_path / "etc"
    (home / ".ssh").mkdir(parents=True)
    (etc / "ssh_config.d").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (home / ".ssh" / "config").write_text("Include user.d/*.conf\n")
    (home / ".ssh" / "user.d").mkdir()
    (home / ".ssh" / "user.d" / "a.conf").write_text("User from-user-include\n")
    (etc / "ssh_config").write_text("Include ssh_config.d/*.conf\n")
    (etc / "ssh_config.d" / "a.conf").write_text("Port 2600\nUser from-system-include\n")
    monkeypatch.setattr(ssh_config, "SYSTEM_CONFIG", str(etc / "ssh_config"))
    monkeypatch.setattr(ssh_options, "GLOBAL_KNOWN_HOSTS", (str(etc / "ssh_known_hosts"),))
    dest = resolve("web-1", SSHOptions())
    assert (dest.user, dest.port) == ("from-user-include", 2600)
    assert dest.global_known_hosts == (str(etc / "ssh_known_hosts"),)
    assert dest.known_hosts[0] == str(home / ".ssh" / "known_hosts")


BAD = [
    ("Match hots web-1\n", "unknown Match criterion 'hots'"),
    ("Match host\n", "Match host needs an argument"),
    ("Match all host web-1\n", "'all' cannot be combined"),
    ("Match\n", "Match needs an argument"),
    ("Host\n", "Host needs an argument"),
    ("Host elsewhere\n    Frobnicate yes\n", "unknown keyword 'Frobnicate'"),
    ("User \"unclosed\n", "a quote is not closed"),
    ("Host elsewhere\n    User a b\n", "bad User 'a b': extra arguments"),
    ("Host elsewhere\n    Port abc\n", "bad Port 'abc': it must be a port number from 1 to 65535"),
    ("IdentitiesOnly maybe\n", "bad IdentitiesOnly 'maybe': it must be yes or no"),
    ("ServerAliveInterval soon\n", "bad ServerAliveInterval 'soon': it must be a time"),
    ("StrictHostKeyChecking sometimes\n", "bad StrictHostKeyChecking 'sometimes'"),
    ("ProxyCommand\n", "ProxyCommand needs an argument"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_configuration_is_one_clear_error(ssh_client, tmp_path, text, message):
    """A malformed Match, an unknown keyword, bad quoting or a bad value, in any block: one
    ConfigError (a ValueError) naming the file and line, for a file ssh -G refuses too."""
    config = tmp_path / "config"
    config.write_text(text)
    refused = subprocess.run([ssh_client, "-G", "-F", str(config), "web-1"], capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=30)
    assert refused.returncode != 0
    with pytest.raises(ConfigError) as info:
        resolve("web-1", SSHOptions(ssh_config=str(config)))
    assert isinstance(info.value, ValueError)
    assert "%s line %d" % (config, text.count("\n")) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("line,message", [
    ("IdentityFile ~/.ssh/%Z", "unknown token %Z (IdentityFile accepts %%, %C, %d"),
    ("UserKnownHostsFile /kh/%", "a lone % at the end"),
    ("IdentityFile ${CHOPSTICKS_UNSET_VARIABLE}/key", "environment variable CHOPSTICKS_UNSET_VARIABLE is not set"),
    ("ProxyCommand nc %h %p %u", "unknown token %u (ProxyCommand accepts %%, %h, %n, %p, %r)"),
    ("HostName %r.example.com", "unknown token %r (HostName accepts %%, %h)"),
])
def test_bad_tokens_are_one_clear_error(tmp_path, line, message):
    """A % token a keyword does not accept, or an unset ${VAR}, is a ConfigError naming both."""
    config = tmp_path / "config"
    config.write_text("Host *\n    %s\n" % line)
    with pytest.raises(ConfigError) as info:
        resolve("web-1", SSHOptions(ssh_config=str(config)))
    assert message in str(info.value)


def test_ignore_unknown_covers_what_it_names_from_where_it_is(tmp_path):
    """IgnoreUnknown (in force at the line) lets an unknown keyword pass, as in OpenSSH."""
    config = tmp_path / "config"
    config.write_text("IgnoreUnknown UseKeychain,AddKeys*\nHost *\n    UseKeychain yes\n    User u\n")
    assert resolve("web-1", SSHOptions(ssh_config=str(config))).user == "u"
    config.write_text("Host *\n    UseKeychain yes\nIgnoreUnknown UseKeychain\n")
    with pytest.raises(ConfigError, match="unknown keyword 'UseKeychain'"):
        resolve("web-1", SSHOptions(ssh_config=str(config)))


def test_each_file_is_parsed_once(tmp_path):
    """A thousand hosts resolved against a config and its Include parse each file once; a file
    that changes is parsed again."""
    included = tmp_path / "included"
    included.write_text("Host web-*\n    Port 2222\n")
    config = tmp_path / "config"
    config.write_text("Include %s\nMatch originalhost web-1*\n    User first\nHost *\n    User other\n" % included)
    ssh_config_file._parse_file.cache_clear()
    options = SSHOptions(ssh_config=str(config))
    dests = [resolve("web-%d" % i, options) for i in range(1000)]
    assert ssh_config_file._parse_file.cache_info().misses == 2
    assert [d.user for d in dests[:3]] == ["other", "first", "other"] and dests[999].port == 2222
    included.write_text("Host web-*\n    Port 2223\n")
    os.utime(included, ns=(0, 0))  # a different mtime, even within the clock's resolution
    assert resolve("web-1", options).port == 2223
    assert ssh_config_file._parse_file.cache_info().misses == 3


def test_one_warning_names_every_unsupported_keyword(tmp_path):
    """Keywords ssh honours and chopsticks does not, and a Match exec (whose block is then not
    applied), are named in one warning per file, however many hosts are resolved."""
    config = tmp_path / "config"
    config.write_text("Host *\n    SendEnv LANG\n    ForwardAgent yes\nMatch exec \"true\"\n    User from-exec\n"
                      "Host web-*\n    SendEnv LC_*\n    BatchMode yes\n    User web\n")
    ssh_config_file._parse_file.cache_clear()
    try:
        with capture_logs() as events:
            for host in ("web-1", "web-2", "web-3"):
                assert resolve(host, SSHOptions(ssh_config=str(config))).user == "web"
    finally:
        structlog.reset_defaults()
    warnings = [event for event in events if event["event"] == "ssh_config_unsupported"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["file"] == str(config)
    assert warnings[0]["keywords"] == ["SendEnv", "ForwardAgent", "Match exec"]


def test_lookup_takes_sources_and_plain_paths(tmp_path):
    """lookup() reads what it is given, in order; a missing file counts as empty."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("Host *\n    User one\n")
    second.write_text("Host *\n    User two\n    Port 2000\n")
    found = ssh_config.lookup("h", [str(tmp_path / "missing"), Source(str(first), str(tmp_path)), str(second)])
    assert (found["user"], found["port"]) == ("one", 2000)


def test_a_host_name_cannot_inject_into_a_proxy_command(tmp_path):
    """%h, %n and %r go into a shell command: a name with a shell metacharacter, a space or a
    leading - is refused there (as OpenSSH 9.6 refuses it), and harmless elsewhere."""
    config = tmp_path / "config"
    config.write_text("Host *\n    ProxyCommand nc %h %p # %r %n\n")
    options = SSHOptions(ssh_config=str(config))
    assert resolve("ops@web-1.example.com", options).proxy_command == "nc web-1.example.com 22 # ops web-1.example.com"
    for target in ("web;touch x", "$(reboot)", "-oProxyCommand=x", "`id`@web-1", "a b"):
        with pytest.raises(ConfigError, match="which a shell would not take as one plain word"):
            resolve(target, options)
    assert resolve("web;1", SSHOptions(ssh_config="")).hostname == "web;1"
