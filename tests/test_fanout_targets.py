"""The command's targeting and run control, from the shell: @groups, --exclude, an Ansible
inventory, --list-hosts, --explain, exit statuses per class of failure, --failed-to, rolling
batches with --max-fail."""

import json

import pytest

from test_fanout import fanout, local, records, ssh_args


def test_groups_file_exclude_and_list_hosts(tmp_path):
    """@NAME expands from the groups file, groups name groups, -x takes hosts away; nothing runs."""
    groups = tmp_path / "groups"
    groups.write_text("# ours\nweb: web-[01-04]\ndb: db-1, db-2\nprod: @web @db  # both\n")
    result = fanout("--groups", str(groups), "-H", "@prod,extra", "-x", "web-02,@db", "--list-hosts")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["web-01", "web-03", "web-04", "extra"]


@pytest.mark.parametrize("text, argv, message", [
    ("web: a\n", ["-H", "@nope"], "unknown group @nope (groups: web)"),
    ("a: @b\nb: @a\n", ["-H", "@a"], "group @a includes itself (@a -> @b -> @a)"),
    ("just words\n", ["-H", "@x"], "line 1: expected 'NAME: HOSTS'"),
    ("a: x\na: y\n", ["-H", "@a"], "group 'a' is defined twice"),
    ("a: x\n", ["-H", "@a", "-x", "@a"], "the host list is empty once the excluded hosts are left out"),
])
def test_bad_groups_are_one_line_and_exit_2(tmp_path, text, argv, message):
    """Each mistake in groups or targeting is one line, exit status 2."""
    groups = tmp_path / "groups"
    groups.write_text(text)
    result = fanout("--groups", str(groups), *argv, "--list-hosts")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_a_missing_groups_file_or_inventory_is_one_line():
    """--groups and --inventory naming missing or malformed files: one line, exit 2."""
    for argv, message in ((["--groups", "/nonexistent/groups"], "does not exist"),
                          (["--inventory", "/nonexistent/inv.json"], "cannot read inventory")):
        result = fanout("-H", "a", *argv, "--list-hosts")
        assert result.returncode == 2 and message in result.stderr, result.stderr


def _inventory(tmp_path, fleet, extra=None):
    """An inventory as `ansible-inventory --list` prints it: web1 and web2 are fleet hosts under names
    of their own, reached by ansible_host and ansible_port."""
    document = {
        "_meta": {"hostvars": {
            "web1": {"ansible_host": fleet.hosts[0], "ansible_port": fleet.port, "ansible_user": "root"},
            "web2": {"ansible_host": fleet.hosts[1], "ansible_port": str(fleet.port), "colour": "blue"},
        }},
        "all": {"children": ["ungrouped", "web"]},
        "web": {"hosts": ["web1", "web2"]},
        "ungrouped": {"hosts": []},
    }
    document.update(extra or {})
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_an_ansible_inventory_names_groups_and_says_how_hosts_are_reached(fleet, tmp_path):
    """Inventory groups are @NAMEs, every host without -H; ansible_host/port/user reach them, results keep
    the inventory's names; --explain shows it."""
    inventory = _inventory(tmp_path, fleet)
    listed = fanout("--inventory", inventory, "--list-hosts")
    assert listed.returncode == 0 and listed.stdout.split() == ["web1", "web2"], listed.stderr
    explained = fanout("--inventory", inventory, "--explain", "web2", "-i", fleet.key, "-F", "")
    assert explained.returncode == 0, explained.stderr
    lines = dict(line.split(" ", 1) for line in explained.stdout.splitlines())
    assert (lines["hostname"], lines["port"], lines["identityfile"]) == (fleet.hosts[1], str(fleet.port), fleet.key)
    ssh = [arg for arg in ssh_args(fleet) if arg not in ("-p", str(fleet.port))]
    result = fanout("--inventory", inventory, "-H", "@web", *ssh, "facts", "hostname")
    assert result.returncode == 0, result.stderr
    assert sorted(records(result)) == ["web1", "web2"]


@pytest.mark.parametrize("extra, message", [
    ({"web": {"hosts": "web1"}}, "web.hosts is not a list of names"),
    ({"_meta": {"hostvars": {"x": {"ansible_port": 70000}}}}, "ansible_port of 'x' cannot be 70000"),
    ({"_meta": []}, "_meta.hostvars is not an object"),
])
def test_a_malformed_inventory_is_one_line(fleet, tmp_path, extra, message):
    """A malformed inventory: one line naming what is wrong, exit 2."""
    result = fanout("--inventory", _inventory(tmp_path, fleet, extra), "--list-hosts")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_explain_shows_what_ssh_would_use(fleet):
    """--explain prints the resolved address, port, user, keys, known_hosts and policy; no login."""
    result = fanout("--explain", "deploy@" + fleet.hosts[0], *ssh_args(fleet), "--host-key-policy", "accept-new")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["user"] == "deploy" and lines["port"] == str(fleet.port) and lines["hostname"] == fleet.hosts[0]
    assert lines["knownhostsfile"] == fleet.known_hosts and lines["hostkeypolicy"] == "accept-new"


def test_exit_statuses_tell_failed_and_unreachable_apart_and_failed_to_reruns_them(fleet, tmp_path):
    """3: some unreachable; 4: unreachable and failed; --failed-to lists them for -f."""
    failed_to = tmp_path / "again.txt"
    unreachable = fanout(*ssh_args(fleet), "-H", fleet.hosts[0] + ",127.0.0.250", "--failed-to", str(failed_to),
                         "run", "true")
    assert unreachable.returncode == 3, unreachable.stderr
    assert failed_to.read_text() == "127.0.0.250\n"
    both = fanout(*ssh_args(fleet), "-H", fleet.hosts[0] + ",127.0.0.250", "--failed-to", str(failed_to),
                  "run", "false")
    assert both.returncode == 4, both.stderr
    assert failed_to.read_text() == "%s\n127.0.0.250\n" % fleet.hosts[0]
    again = fanout(*ssh_args(fleet), "-f", str(failed_to), "--list-hosts")
    assert again.stdout.split() == [fleet.hosts[0], "127.0.0.250"]
    ok = fanout(*ssh_args(fleet), "-H", fleet.hosts[0], "--failed-to", str(failed_to), "run", "true")
    assert ok.returncode == 0 and failed_to.read_text() == ""


def test_failed_to_in_a_missing_directory_is_refused_before_anything_runs(tmp_path):
    """--failed-to into a directory that does not exist: exit 2 before any host is contacted."""
    result = local("-H", "a", "--failed-to", str(tmp_path / "no" / "f"), "run", "touch %s" % (tmp_path / "ran"))
    assert result.returncode == 2 and "--failed-to: directory" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_batches_run_one_after_another(tmp_path):
    """--batch 2 over 5 hosts: three batches, each started once the one before had finished."""
    result = local("-H", "b-[1-5]", "--batch", "2", "run", "python3 -c 'import time; print(time.time()); "
                   "time.sleep(0.3); print(time.time())'")
    assert result.returncode == 0, result.stderr
    times = {host: [float(x) for x in r["value"]["stdout"].split()] for host, r in records(result).items()}
    batches = [["b-1", "b-2"], ["b-3", "b-4"], ["b-5"]]
    for earlier, later in zip(batches, batches[1:]):
        assert max(times[h][1] for h in earlier) <= min(times[h][0] for h in later)


def test_max_fail_stops_starting_batches_and_reports_the_rest_not_started():
    """--max-fail 2 with batches of 2 that all fail: one batch runs, the other 4 hosts are 'not started'."""
    result = local("-H", "m-[1-6]", "--batch", "2", "--max-fail", "2", "--format", "json", "run", "false")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    statuses = [r["status"] for r in document["results"]]
    assert statuses == ["failed", "failed"] + ["not started"] * 4
    assert document["summary"]["not_started"] == 4
    assert "4 not started (--max-fail)" in result.stderr
    percent = local("-H", "m-[1-4]", "--batch", "50%", "--max-fail", "25%", "run", "false")
    assert [r["status"] for r in records(percent).values()].count("not started") == 2


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch: must be at least 1 host, got 0"),
    (["--batch", "150%"], "--batch: a percentage must be more than 0% and at most 100%, got 150%"),
    (["--max-fail", "0%"], "--max-fail: a percentage must be more than 0%"),
    (["--max-fail", "many"], "--max-fail: 'many' is not a number of hosts or a percentage"),
])
def test_bad_batch_options_are_one_line(argv, message):
    """--batch and --max-fail refuse 0, percentages over 100 and words: one line, exit 2."""
    result = local("-H", "a", *argv, "run", "true")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_no_command_is_one_line():
    """Without a subcommand (and without --list-hosts or --explain): one line, exit 2."""
    result = fanout("-H", "a")
    assert result.returncode == 2 and "a command is needed" in result.stderr


def test_environment_defaults_and_the_command_line_wins(tmp_path):
    """CHOPSTICKS_* give options' defaults; the command line replaces them; a bad one names its variable."""
    import os
    import subprocess
    import sys
    from test_fanout import HERE, ROOT

    def run(env, *argv):
        return subprocess.run([sys.executable, "-m", "chopsticks.fanout", *argv], cwd=HERE, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=60)
    result = run({"CHOPSTICKS_TRANSPORT": "local", "CHOPSTICKS_FORMAT": "json"}, "-H", "e-1", "run", "true")
    assert result.returncode == 0 and json.loads(result.stdout)["summary"]["ok"] == 1, result.stderr
    result = run({"CHOPSTICKS_TRANSPORT": "local", "CHOPSTICKS_FORMAT": "json"}, "-H", "e-1", "run", "true",
                 "--format", "jsonl")
    assert json.loads(result.stdout.splitlines()[0])["host"] == "e-1"
    bad = run({"CHOPSTICKS_TIMEOUT": "soon"}, "-H", "e-1", "--transport", "local", "run", "true")
    assert bad.returncode == 2 and "'soon' is not a number" in bad.stderr and "$CHOPSTICKS_TIMEOUT" in bad.stderr
    groups = tmp_path / "g"
    groups.write_text("g: g-1 g-2\n")
    listed = run({"CHOPSTICKS_GROUPS": str(groups)}, "-H", "@g", "--list-hosts")
    assert listed.stdout.split() == ["g-1", "g-2"], listed.stderr


def test_argument_files(tmp_path):
    """@FILE is replaced by its lines, files may name files; -H @NAME stays a group; a missing file is one line."""
    inner = tmp_path / "inner.args"
    inner.write_text("# the transport\n--transport\nlocal\n")
    outer = tmp_path / "outer.args"
    outer.write_text("@%s\n--format\njson\n" % inner)
    result = fanout("@%s" % outer, "-H", "f-[1-2]", "run", "true")
    assert result.returncode == 0 and json.loads(result.stdout)["summary"]["ok"] == 2, result.stderr
    groups = tmp_path / "groups"
    groups.write_text("outer.args: f-9\n")
    listed = fanout("--groups", str(groups), "-H", "@outer.args", "--list-hosts")
    assert listed.stdout.split() == ["f-9"], listed.stderr
    missing = fanout("@/nonexistent/args", "-H", "a", "run", "true")
    assert missing.returncode == 2 and "cannot read argument file '/nonexistent/args'" in missing.stderr


def test_a_commands_own_words_are_neither_argument_files_nor_options(tmp_path):
    """After the subcommand, '@word' is the command's (no file is read); after '--', '-u root' does
    not count as the command line's --user (CHOPSTICKS_USER still applies)."""
    from chopsticks.fanout import defaults
    result = local("-H", "w-1", "--format", "json", "run", "--", "echo @user")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["value"]["stdout"] == "@user\n"
    argv, sources = defaults.from_environment(["-H", "a", "run", "--", "ps", "-u", "root"],
                                              {"CHOPSTICKS_USER": "deploy"})
    assert argv[:2] == ["--user", "deploy"] and sources == {"--user": "CHOPSTICKS_USER"}
