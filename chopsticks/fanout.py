"""``python -m chopsticks.fanout``: one job on many hosts, from the shell. CLI layer.

    python -m chopsticks.fanout -H 'web-[001-500]' facts hostname os_release
    python -m chopsticks.fanout -f hosts.txt run 'systemctl is-active nginx'
    python -m chopsticks.fanout -H db-1,db-2 call mypkg.checks:disk_ok --json-args '["/var"]'

Results print as a table on a terminal and as JSON lines otherwise, then a summary. The exit
status is 0 when every host succeeded, 1 when any failed or timed out, 2 for a usage error
(always one line, never a traceback), 130 when interrupted: Ctrl-C closes every tunnel and
prints what finished.
"""

import argparse
import dataclasses
import functools
import getpass
import importlib
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from chopsticks import facts, helpers, hosts
from chopsticks.errors import ChopsticksError
from chopsticks.fanout_output import (
    FAILED, OK, TIMED_OUT, configure_logging, jsonable, print_line, progress_bar, record, show, summarize,
    summary_line,
)

PROG = "python -m chopsticks.fanout"
RUN_GRACE = 5.0  # seconds a `run` call may outlive the command's own timeout (to report it)
# Shown for `facts` without names in a table; --format json or jsonl has them all.
TABLE_FACTS = ("hostname", "ip", "os_release", "kernel", "arch", "cpus", "memory", "load", "uptime",
               "python_version")


EPILOG = """examples:
  %(prog)s -H 'web-[001-500]' facts hostname os_release
  %(prog)s -f hosts.txt -u deploy run 'systemctl is-active nginx'
  %(prog)s -H db-1,db-2 call mypkg.checks:disk_ok --json-args '["/var"]'
  getent hosts | awk '{print $2}' | %(prog)s facts --format json

Options may come before or after the subcommand. Each command has its own --help.
exit status: 0 every host succeeded, 1 some failed or timed out, 2 usage error, 130 interrupted
"""


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(message)


# -- the command line ---------------------------------------------------------------------------

def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text) from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be more than 0, got %s" % text)
        return value
    parse.__name__ = kind.__name__
    return parse


def _add_common(parser: argparse.ArgumentParser) -> None:
    """The options every subcommand takes; accepted before or after the subcommand."""
    group = parser.add_argument_group("hosts")
    group.add_argument("-H", "--hosts", action="append", metavar="HOSTS",
                       help="hosts or ranges, separated by commas or spaces: 'web-[001-500]', "
                            "'10.0.[1-3].[1-254]', 'deploy@db-1:2222' (repeatable)")
    group.add_argument("-f", "--hosts-file", action="append", metavar="FILE",
                       help="a file of hosts or ranges, one or more per line, '#' comments; '-' reads "
                            "stdin (repeatable). With neither -H nor -f, hosts are read from stdin")
    group = parser.add_argument_group("running")
    group.add_argument("--transport", choices=("ssh", "local", "docker"),
                       help="ssh (default); local: each host name labels a local python3 subprocess "
                            "(run as another user with --sudo); docker: each host is a container, a "
                            "fresh one of --image or else a running one, entered with exec")
    group.add_argument("-c", "--concurrency", type=_positive(int), metavar="N",
                       help="hosts worked on at once (default: from the open-files limit)")
    group.add_argument("-t", "--timeout", type=_positive(float), metavar="SECONDS",
                       help="per-host limit on the call (for run: on the command)")
    group.add_argument("--deadline", type=_positive(float), metavar="SECONDS",
                       help="limit on the whole run; hosts unfinished then count as timed out")
    group.add_argument("--python", metavar="PATH", help="the remote interpreter (default python3)")
    group = parser.add_argument_group("ssh")
    group.add_argument("-u", "--user", help="remote user (default: ssh config, then your name)")
    group.add_argument("-p", "--port", type=int, help="remote port (default: ssh config, then 22)")
    group.add_argument("-i", "--key", action="append", metavar="FILE", help="private key (repeatable)")
    group.add_argument("-J", "--jump", metavar="[USER@]HOST[:PORT],...", help="jump hosts, as ProxyJump")
    group.add_argument("--known-hosts", action="append", metavar="FILE", help="known_hosts file (repeatable)")
    group.add_argument("--host-key-policy", choices=("strict", "accept-new", "off"),
                       help="unknown host keys: refuse (strict, default), record (accept-new) or ignore (off)")
    group.add_argument("--connect-timeout", type=_positive(float), metavar="SECONDS",
                       help="limit on reaching a host and starting its agent")
    group.add_argument("-F", "--ssh-config", metavar="FILE", help="ssh config file (default ~/.ssh/config; '' for none)")
    group.add_argument("--no-agent", action="store_true", help="do not ask ssh-agent for keys")
    group.add_argument("--ask-pass", action="store_true", help="prompt for a password")
    group.add_argument("--ask-passphrase", action="store_true", help="prompt for the key's passphrase")
    group.add_argument("--sudo", nargs="?", const="root", metavar="USER",
                       help="run the agent under 'sudo -n' as USER (default root)")
    group = parser.add_argument_group("containers (--transport docker)")
    group.add_argument("--image", help="start a fresh container of IMAGE per host, named as the host and "
                                       "removed at the end (never pulled)")
    group.add_argument("--engine", metavar="COMMAND",
                       help="docker or podman (default: $CHOPSTICKS_CONTAINER_ENGINE, else whichever is installed)")
    group = parser.add_argument_group("output")
    group.add_argument("--format", choices=("table", "jsonl", "json"),
                       help="table (default on a terminal), jsonl (a JSON object per host as it "
                            "finishes; the default otherwise) or json (one document at the end)")
    group.add_argument("--no-progress", action="store_true",
                       help="no progress bar (shown only when stderr is a terminal)")
    group.add_argument("--log-format", choices=("console", "json"), help="logs on stderr (default console)")
    group.add_argument("-v", "--verbose", action="store_true", help="debug logs too: connects, modules served, timings")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings only; no remote output")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Run one job on many hosts at once: gather facts, call a Python "
                     "function, or run a shell command.", epilog=EPILOG)
    _add_common(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

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
    _add_common(sub)

    sub = add_command("fetch", "copy a file or directory from each host",
                      "Copy a remote file or directory tree from each host to a local path made from "
                      "DST_TEMPLATE with {host} replaced by the host's name.")
    sub.add_argument("src", metavar="SRC", help="remote file or directory")
    sub.add_argument("dst", metavar="DST_TEMPLATE", help="local path with {host}, e.g. 'logs/{host}/syslog'")
    sub.add_argument("--make-dirs", action="store_true", default=False, help="create missing local directories")
    _add_common(sub)
    return parser


# -- what to run ---------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    """One subcommand, ready: what to call on each host and how to judge and show a result.

    ``fn(*args)`` is called on every host, or ``transfer(group, deadline, progress)`` starts
    a put or fetch; either way the results arrive as ``(host, value)``. ``total_bytes``
    makes the progress bar count bytes (put), ``count_bytes`` count them without a total."""

    fn: Optional[Callable] = None
    args: Tuple = ()
    call_timeout: Optional[float] = None
    judge: Callable[[Any], str] = lambda value: OK
    columns: Optional[List[str]] = None  # for a dict result shown as a table; None: one column
    transfer: Optional[Callable[[Any, Optional[float], Any], Iterator[Tuple[str, Any]]]] = None
    count_bytes: bool = False
    total_bytes: Optional[int] = None

    def start(self, group, deadline: Optional[float], progress) -> Iterator[Tuple[str, Any]]:
        if self.transfer is not None:
            return self.transfer(group, deadline, progress)
        return group.iter_call(self.fn, *self.args, timeout=self.call_timeout, deadline=deadline)


def _facts_job(args) -> Job:
    unknown = [name for name in args.names if name not in facts.FACTS]
    if unknown:
        raise UsageError("unknown fact %r; facts are: %s" % (unknown[0], ", ".join(facts.FACTS)))
    names = list(dict.fromkeys(args.names))
    return Job(facts.all, (names or None,), args.timeout, columns=names or list(TABLE_FACTS))


def _json_arg(text: Optional[str], option: str, kind: type) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError("%s is not valid JSON: %s" % (option, exc)) from None
    if not isinstance(value, kind):
        names = {list: "an array", dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
        raise UsageError("%s must be a JSON %s, got %s" % (option, "array" if kind is list else "object",
                                                           names.get(type(value), "a number")))
    return value


def load_function(target: str) -> Callable:
    """``'pkg.mod:func'`` (or ``'pkg.mod:Class.method'``) -> the function, imported here."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise UsageError("expected MODULE:FUNCTION, got %r" % target)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError("no module named %r" % exc.name) from None
        raise UsageError("cannot import %s: %s" % (module_name, exc)) from None
    except Exception as exc:
        raise UsageError("cannot import %s: %s: %s" % (module_name, type(exc).__name__, exc)) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError("%s has no attribute %r" % (target.rpartition(".")[0] if "." in attr_path
                                                         else module_name, part)) from None
    if not callable(obj):
        raise UsageError("%s is not callable (it is a %s)" % (target, type(obj).__name__))
    return obj


def _call_job(args) -> Job:
    fn = load_function(args.target)
    positional = list(args.args) + _json_arg(args.json_args, "--json-args", list)
    keywords = _json_arg(args.json_kwargs, "--json-kwargs", dict)
    call = functools.partial(fn, **keywords) if keywords else fn
    return Job(call, tuple(positional), args.timeout)


def _judge_run(value: Any) -> str:
    if value.get("timed_out"):
        return TIMED_OUT
    return OK if value.get("exit_code") == 0 else FAILED


def _run_job(args) -> Job:
    command = " ".join(args.words)
    if not command.strip():
        raise UsageError("the command is empty")
    # the command's own timeout kills its process group on the host and reports it
    fn = functools.partial(helpers.run, command, timeout=args.timeout)
    call_timeout = None if args.timeout is None else args.timeout + RUN_GRACE
    return Job(fn, (), call_timeout, judge=_judge_run)


def _tree_size(path: str) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(top, name)) for top, _, names in os.walk(path) for name in names
               if os.path.isfile(os.path.join(top, name)) and not os.path.islink(os.path.join(top, name)))


def _put_job(args) -> Job:
    try:
        size = _tree_size(args.src)
        if not os.path.isdir(args.src):
            with open(args.src, "rb"):
                pass
    except OSError as exc:
        raise UsageError("cannot read %s: %s" % (args.src, exc.strerror)) from None
    mode = None
    if args.mode is not None:
        try:
            mode = int(args.mode, 8)
        except ValueError:
            raise UsageError("--mode must be octal permission bits such as 644, got %r" % args.mode) from None
        if not 0 <= mode <= 0o7777:
            raise UsageError("--mode must be octal permission bits such as 644, got %r" % args.mode)

    def start(group, deadline, progress):
        return group.iter_put(args.src, args.dst, mode, make_dirs=args.make_dirs, timeout=args.timeout,
                              deadline=deadline, progress=progress)
    return Job(transfer=start, columns=["remote_path", "size", "sha256"], count_bytes=True, total_bytes=size)


def _fetch_job(args) -> Job:
    if "{host}" not in args.dst:
        raise UsageError("DST_TEMPLATE must contain {host}, so that each host gets its own path "
                         "(e.g. 'backup/{host}/%s')" % os.path.basename(args.src.rstrip("/")))
    try:
        args.dst.format(host="host")
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError("bad DST_TEMPLATE %r: %s; only {host} is replaced" % (args.dst, exc)) from None

    def start(group, deadline, progress):
        return group.iter_fetch(args.src, args.dst, make_dirs=args.make_dirs, timeout=args.timeout,
                                deadline=deadline, progress=progress)
    return Job(transfer=start, columns=["local_path", "size", "sha256"], count_bytes=True)


JOBS = {"facts": _facts_job, "call": _call_job, "run": _run_job, "put": _put_job, "fetch": _fetch_job}


# -- hosts and tunnels ----------------------------------------------------------------------

def read_hosts(args) -> List[str]:
    files = list(args.hosts_file or [])
    if not args.hosts and not files:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no hosts: give -H HOSTS, -f FILE, or a list on stdin")
        files = ["-"]
    try:
        names = hosts.collect(args.hosts or [], files)
    except hosts.HostSpecError as exc:
        raise UsageError(str(exc)) from None
    if not names:
        raise UsageError("the host list is empty")
    return names


def _pipe_tunnel(args, name: str, options: Dict[str, Any]):
    from chopsticks.tunnel import Docker, Local, Sudo

    if args.transport == "docker":
        if args.image:
            return Docker(name, image=args.image, engine=args.engine, **options)
        return Docker(name, container=name, engine=args.engine, **options)
    if args.sudo:
        return Sudo(args.sudo, name=name, **options)
    return Local(name, **options)


def make_group(args, names: List[str]):
    from chopsticks.group import Group

    tunnel_options: Dict[str, Any] = {}
    if args.python:
        tunnel_options["python"] = args.python
    if args.connect_timeout:
        tunnel_options["connect_timeout"] = args.connect_timeout
    if args.transport != "docker" and (args.image or args.engine):
        raise UsageError("%s is for --transport docker" % ("--image" if args.image else "--engine"))
    if args.transport in ("local", "docker"):
        ssh_only = [flag for flag, value in (("--user", args.user), ("--port", args.port), ("--key", args.key),
                                             ("--jump", args.jump)) if value]
        if args.sudo and args.transport == "docker":
            ssh_only.append("--sudo")
        if ssh_only:
            raise UsageError("%s is not for --transport %s" % (ssh_only[0], args.transport))
        try:
            tunnels = [_pipe_tunnel(args, name, tunnel_options) for name in names]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return Group(tunnels, concurrency=args.concurrency)
    ssh: Dict[str, Any] = {"user": args.user, "port": args.port, "key": args.key, "jump": args.jump,
                           "known_hosts": args.known_hosts, "host_key_policy": args.host_key_policy,
                           "ssh_config": args.ssh_config}
    ssh = {name: value for name, value in ssh.items() if value is not None}
    if args.jump:
        ssh["jump"] = [hop for hop in args.jump.split(",") if hop]
    if args.no_agent:
        ssh["agent"] = False
    if args.ask_pass:
        ssh["password"] = getpass.getpass("SSH password: ")
    if args.ask_passphrase:
        ssh["passphrase"] = getpass.getpass("Key passphrase: ")
    if args.sudo:
        tunnel_options["sudo"] = args.sudo
    try:
        return Group(names, concurrency=args.concurrency, **ssh, **tunnel_options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- running --------------------------------------------------------------------------------

def execute(args, job: Job, group) -> int:
    import structlog
    log = structlog.get_logger("chopsticks.fanout")
    fmt = args.format or ("table" if sys.stdout.isatty() else "jsonl")
    records: List[Dict[str, Any]] = []
    bar = progress_bar(len(group), bool(sys.stderr.isatty() and not args.no_progress), job.count_bytes,
                       job.total_bytes)
    counts = {OK: 0, FAILED: 0, TIMED_OUT: 0}
    started = time.monotonic()
    log.debug("fanout_started", hosts=len(group), command=args.command)
    results = job.start(group, args.deadline, bar.update if job.count_bytes else None)
    interrupted = False
    try:
        for host, value in results:
            entry = record(host, value, job.judge)
            records.append(entry)
            counts[entry["status"]] += 1
            if fmt == "jsonl":
                print_line(json.dumps(jsonable(entry)), bar)
            hosts_done = "%d/%d hosts: " % (len(records), len(group)) if job.count_bytes else ""
            bar.set_postfix_str("%s%d ok, %d failed, %d timed out" % (hosts_done, counts[OK], counts[FAILED],
                                                                     counts[TIMED_OUT]), refresh=False)
            if not job.count_bytes:
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        getattr(results, "close", lambda: None)()  # stop the fan-out: its pool and greenlets
        bar.close()
        try:
            group.close()
        except KeyboardInterrupt:
            interrupted = True
    summary = summarize(records, len(group), time.monotonic() - started)
    log.debug("fanout_finished", **summary)
    order = {tunnel.host: index for index, tunnel in enumerate(group)}
    records.sort(key=lambda r: order[r["host"]])
    if fmt == "json":
        print(json.dumps({"results": [jsonable(r) for r in records], "summary": summary}, indent=2))
    elif fmt == "table":
        show(records, job.columns, args.command == "run")
    print(summary_line(summary), file=sys.stdout if fmt == "table" else sys.stderr)
    if interrupted:
        return 130
    return 0 if summary["ok"] == summary["hosts"] else 1


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        job = JOBS[args.command](args)
        names = read_hosts(args)
        configure_logging(args.quiet, args.verbose, args.log_format)
        group = make_group(args, names)
    except UsageError as exc:
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    try:
        return execute(args, job, group)
    except ChopsticksError as exc:
        print("%s: %s" % (PROG, exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
