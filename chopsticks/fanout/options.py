"""The command line of ``python -m chopsticks.fanout``: its options and subcommands. CLI layer.

Every option is accepted before or after the subcommand; a bad one is a ``UsageError``,
printed by ``fanout.command.main`` as one line with exit status 2.
"""

import argparse
import math
from typing import Any, Callable

from chopsticks import facts

PROG = "python -m chopsticks.fanout"

EPILOG = """examples:
  %(prog)s -H 'web-[001-500]' facts hostname os_release
  %(prog)s -f hosts.txt -u deploy run 'systemctl is-active nginx'
  %(prog)s -H db-1,db-2 call mypkg.checks:disk_ok --json-args '["/var"]'
  getent hosts | awk '{print $2}' | %(prog)s facts --format json

Options may come before or after the subcommand. Each command has its own --help.
exit status: 0 every host succeeded, 1 some failed, timed out or were not started, 2 usage error,
3 some were unreachable, 4 some unreachable and some failed, 130 interrupted, 141 the reader
of the output went away
"""


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(message)


# -- the command line ---------------------------------------------------------------------------

# Seconds of a limit: under 2**31 milliseconds, the most poll() waits on a host (24.8 days).
MAX_SECONDS = 2_000_000


def _positive(kind: Callable[[str], Any], most: float = math.inf) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text) from None
        if not 0 < value <= most or not math.isfinite(value):  # nan compares false with everything
            raise argparse.ArgumentTypeError("must be a number more than 0%s, got %s" % (
                "" if most == math.inf else " and at most %d" % most, text))
        return value
    parse.__name__ = kind.__name__
    return parse


def _share(text: str) -> Any:
    from chopsticks.fanout.run import parse_share
    try:
        return parse_share(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(text: str) -> Any:
    return text if text == "auto" else _positive(int)(text)


def _add_common(parser: argparse.ArgumentParser) -> None:
    """The options every subcommand takes; accepted before or after the subcommand."""
    group = parser.add_argument_group("hosts")
    group.add_argument("-H", "--hosts", action="append", metavar="HOSTS",
                       help="hosts or ranges, separated by commas or spaces: 'web-[001-500]', "
                            "'10.0.[1-3].[1-254]', 'deploy@db-1:2222' (repeatable)")
    group.add_argument("-f", "--hosts-file", action="append", metavar="FILE",
                       help="a file of hosts or ranges, one or more per line, '#' comments; '-' reads "
                            "stdin (repeatable). With neither -H nor -f, hosts are read from stdin")
    group.add_argument("-x", "--exclude", action="append", metavar="HOSTS",
                       help="hosts, ranges or @groups to leave out (repeatable)")
    group.add_argument("--groups", metavar="FILE",
                       help="the groups file that @NAME reads (default: $XDG_CONFIG_HOME/chopsticks/groups, "
                            "else ~/.config/chopsticks/groups); lines 'NAME: HOSTS...', '#' comments")
    group.add_argument("--inventory", metavar="FILE",
                       help="an Ansible inventory as JSON (`ansible-inventory --list`): its groups are @NAMEs, "
                            "its ansible_host/port/user used; without -H or -f, every host in it")
    group.add_argument("--list-hosts", action="store_true", help="print the hosts the run would target, and exit")
    group.add_argument("--explain", metavar="HOST",
                       help="print what would be used to reach HOST (address, port, user, keys, jump hosts, "
                            "known_hosts, policy), as ssh -G does, and exit")
    group = parser.add_argument_group("running")
    group.add_argument("--transport", choices=("ssh", "local", "docker"),
                       help="ssh (default); local: each host name labels a local python3 subprocess "
                            "(run as another user with --sudo); docker: each host is a container, a "
                            "fresh one of --image or else a running one, entered with exec")
    group.add_argument("-c", "--concurrency", type=_positive(int), metavar="N",
                       help="hosts worked on at once (default: from the open-files limit)")
    group.add_argument("--workers", type=_workers, metavar="N|auto",
                       help="spread the hosts over N shard processes, each with its own core's worth of "
                            "SSH work ('auto': one per core, at most one per host); ssh only (default: 1, none)")
    group.add_argument("--cluster", metavar="ADDRESS|auto",
                       help="run the shards as actors of the Ray cluster at ADDRESS ('auto': $RAY_ADDRESS, else "
                            "the cluster running here), one per CPU it offers unless --workers says; ssh only; "
                            "needs pip install chopsticks[ray]")
    group.add_argument("-t", "--timeout", type=_positive(float, MAX_SECONDS), metavar="SECONDS",
                       help="per-host limit on the call (for run: on the command)")
    group.add_argument("--deadline", type=_positive(float, MAX_SECONDS), metavar="SECONDS",
                       help="limit on the whole run; hosts unfinished then count as timed out")
    group.add_argument("--python", metavar="PATH", help="the remote interpreter (default python3)")
    group.add_argument("--batch", type=_share, metavar="N|P%",
                       help="run the hosts in successive batches of N hosts (or P%% of them), in order")
    group.add_argument("--max-fail", type=_share, metavar="N|P%",
                       help="start no new batch once N hosts (or P%%) have not succeeded; the rest are "
                            "reported as not started")
    group.add_argument("--failed-to", metavar="FILE",
                       help="write the hosts that did not succeed to FILE, one per line (rerun them with -f FILE)")
    group = parser.add_argument_group("ssh")
    group.add_argument("-u", "--user", help="remote user (default: ssh config, then your name)")
    group.add_argument("-p", "--port", type=int, help="remote port (default: ssh config, then 22)")
    group.add_argument("-i", "--key", action="append", metavar="FILE", help="private key (repeatable)")
    group.add_argument("-J", "--jump", metavar="[USER@]HOST[:PORT],...", help="jump hosts, as ProxyJump")
    group.add_argument("--known-hosts", action="append", metavar="FILE", help="known_hosts file (repeatable)")
    group.add_argument("--host-key-policy", choices=("strict", "accept-new", "off"),
                       help="unknown host keys: refuse (strict, default), record (accept-new) or ignore (off)")
    group.add_argument("--connect-timeout", type=_positive(float, MAX_SECONDS), metavar="SECONDS",
                       help="limit on reaching a host and starting its agent")
    group.add_argument("-F", "--ssh-config", metavar="FILE",
                       help="ssh config file, the only one read, as ssh -F (default ~/.ssh/config, then "
                       "/etc/ssh/ssh_config; '' for none)")
    group.add_argument("--no-agent", action="store_true", help="do not ask ssh-agent for keys")
    group.add_argument("--ask-pass", action="store_true", help="prompt for a password")
    group.add_argument("--ask-passphrase", action="store_true", help="prompt for the key's passphrase")
    group.add_argument("--sudo", nargs="?", const="root", metavar="USER",
                       help="run the agent under 'sudo -n' as USER (default root)")
    group.add_argument("-K", "--ask-become-pass", action="store_true",
                       help="with --sudo: prompt once for the password sudo asks for (then 'sudo -S', the "
                            "password written only in answer to sudo's own prompt)")
    group = parser.add_argument_group("containers")
    group.add_argument("--image", help="--transport docker: start a fresh container of IMAGE per host, named as "
                                       "the host and removed at the end (never pulled)")
    group.add_argument("--container", metavar="NAME",
                       help="ssh and local transports: on each host, work inside its running container NAME, "
                            "entered with exec by the host's own agent (results are named 'HOST -> NAME')")
    group.add_argument("--engine", metavar="COMMAND",
                       help="docker or podman (default: $CHOPSTICKS_CONTAINER_ENGINE, else whichever is installed "
                            "where the container runs)")
    group = parser.add_argument_group("output")
    group.add_argument("--format", choices=("table", "jsonl", "json"),
                       help="table (default on a terminal), jsonl (a JSON object per host as it "
                            "finishes; the default otherwise) or json (one document at the end)")
    group.add_argument("--no-progress", action="store_true",
                       help="no progress bar (shown only when stderr is a terminal)")
    group.add_argument("--log-format", choices=("console", "json"), help="logs on stderr (default console)")
    group.add_argument("-v", "--verbose", action="store_true", help="debug logs too: connects, modules served, timings")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings only; no remote output")
    group.add_argument("--fold", action=argparse.BooleanOptionalAction,
                       help="show hosts with the same result once, under a folded range such as web-[001-480,482]: "
                            "run's output blocks, for the others a census of each column's values (a table unless "
                            "--format json; default: run on a terminal, when that at least halves the blocks)")
    group.add_argument("--out-dir", metavar="DIR",
                       help="also write each host's result to DIR/HOST.json, and run's stdout and stderr to "
                            "DIR/HOST.out and DIR/HOST.err (DIR is made if missing; files already there are replaced)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Run one job on many hosts at once: gather facts, call a Python "
                     "function, or run a shell command.", epilog=EPILOG)
    _add_common(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = False  # --list-hosts and --explain need none; the command checks

    def add_command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        # an option not given after the subcommand must not overwrite one given before it
        return commands.add_parser(name, help=summary, description=description,
                                   argument_default=argparse.SUPPRESS)

    sub = add_command("facts", "gather facts (all, or those named)",
                      "Gather facts about each host: %s." % ", ".join(facts.FACTS))
    sub.add_argument("names", nargs="*", metavar="NAME", default=[], help="facts to gather (default: all)")
    _add_common(sub)

    sub = add_command("call", "call MODULE:FUNCTION on each host",
                      "Call a Python function on each host. The module must be importable here; "
                      "it is sent to the hosts on demand.")
    sub.add_argument("target", metavar="MODULE:FUNCTION")
    sub.add_argument("args", nargs="*", metavar="ARG", default=[], help="string arguments")
    sub.add_argument("--json-args", metavar="JSON", default=None, help="positional arguments as a JSON array")
    sub.add_argument("--json-kwargs", metavar="JSON", default=None, help="keyword arguments as a JSON object")
    _add_common(sub)

    sub = add_command("run", "run a shell command on each host",
                      "Run a command through /bin/sh on each host; report its exit code, stdout and "
                      "stderr. A non-zero exit counts as failed. Quote it, or put -- before it.")
    sub.add_argument("words", nargs="+", metavar="COMMAND", help="the command (several words are joined)")
    _add_common(sub)

    sub = add_command("put", "copy a file or directory to each host",
                      "Copy a local file or directory tree to each host. The file is read once for "
                      "all hosts; each host's copy appears whole (checked by size and SHA-256) or not "
                      "at all. Mode and mtime are kept.")
    sub.add_argument("src", metavar="SRC", help="local file or directory")
    sub.add_argument("dst", metavar="DST", help="remote path")
    sub.add_argument("--mode", default=None, help="permission bits, octal (default: the local file's)")
    sub.add_argument("--make-dirs", action="store_true", default=False, help="create missing remote directories")
    sub.add_argument("--if-changed", action="store_true", default=False,
                     help="send nothing where the remote file already has the same size and SHA-256 (its mode "
                          "and mtime are still set)")
    sub.add_argument("--sessions", type=int, default=None, metavar="N",
                     help="send a big file to each SSH host over N extra SSH sessions, a byte range each, "
                          "encrypted on several cores (0: the tunnel's own stream; default: 1 from 8 MiB, "
                          "2 from 64 MiB)")
    sub.add_argument("--relay", type=_positive(int), default=None, metavar="N",
                     help="send the file to N hosts only, each of which passes it on to N more, and so on "
                          "(a tree of degree N); each relay reaches the next hosts with its own ssh client "
                          "and the same options (key and known_hosts paths as on the relay); ssh only")
    _add_common(sub)

    sub = add_command("fetch", "copy a file or directory from each host",
                      "Copy a remote file or directory tree from each host to a local path made from "
                      "DST_TEMPLATE with {host} replaced by the host's name.")
    sub.add_argument("src", metavar="SRC", help="remote file or directory")
    sub.add_argument("dst", metavar="DST_TEMPLATE", help="local path with {host}, e.g. 'logs/{host}/syslog'")
    sub.add_argument("--make-dirs", action="store_true", default=False, help="create missing local directories")
    sub.add_argument("--sessions", type=int, default=None, metavar="N",
                     help="fetch a big file from each SSH host over N extra SSH sessions, a byte range each, "
                          "decrypted on several cores (0: the tunnel's own stream; default: 1 from 8 MiB, "
                          "2 from 64 MiB)")
    _add_common(sub)
    return parser
