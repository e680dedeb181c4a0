"""``python -m chopsticks.fanout``: one job on many hosts, from the shell. CLI layer.

    python -m chopsticks.fanout -H 'web-[001-500]' facts hostname os_release
    python -m chopsticks.fanout -f hosts.txt run 'systemctl is-active nginx'
    python -m chopsticks.fanout -H db-1,db-2 call mypkg.checks:disk_ok --json-args '["/var"]'

Results print as a table on a terminal and as JSON lines otherwise, then a summary. The exit
status is 0 when every host succeeded, 1 when any failed or timed out, 2 for a usage error
(always one line, never a traceback), 130 when interrupted: Ctrl-C closes every tunnel and
prints what finished; 141, quietly, when the reader of the output goes away (``| head -1``).
"""

import dataclasses
import functools
import getpass
import importlib
import io
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from chopsticks import facts, helpers, hosts
from chopsticks.errors import ChopsticksError
from chopsticks.fanout_options import PROG, UsageError, build_parser
from chopsticks.fanout_output import (
    FAILED, OK, TIMED_OUT, cli_hints, configure_logging, print_line, progress_bar, record, show, summarize,
    summary_line, to_json,
)
from chopsticks.logs import visible

RUN_GRACE = 5.0  # seconds a `run` call may outlive the command's own timeout (to report it)
# Shown for `facts` without names in a table; --format json or jsonl has them all.
TABLE_FACTS = ("hostname", "ip", "os_release", "kernel", "arch", "cpus", "memory", "load", "uptime",
               "python_version")


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
    deadline_grace: float = 0.0  # how long the fan-out waits past --deadline (for run's reports)

    def start(self, group, deadline: Optional[float], progress) -> Iterator[Tuple[str, Any]]:
        if deadline is not None:
            deadline += self.deadline_grace
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


# What helpers.run returns; anything else (a hostile or broken host) fails that host.
RUN_RESULT: Dict[str, Any] = {"exit_code": (int, type(None)), "stdout": str, "stderr": str, "timed_out": bool}


def _judge_run(value: Any) -> str:
    if not isinstance(value, dict) or any(not isinstance(value.get(key), kind) for key, kind in RUN_RESULT.items()):
        raise ValueError("run returns a dict of %s, this host sent %s" % (
            ", ".join(RUN_RESULT), "one with other keys or types" if isinstance(value, dict) else
            "a %s" % type(value).__name__))
    if value["timed_out"]:
        return TIMED_OUT
    return OK if value["exit_code"] == 0 else FAILED


def _run_job(args) -> Job:
    command = " ".join(args.words)
    if not command.strip():
        raise UsageError("the command is empty")
    # The command's own limit kills its process group on the host and reports what it printed:
    # --timeout, and --deadline too, so that no command goes on running once the run is over.
    # The fan-out waits RUN_GRACE longer than either for those reports.
    limits = [limit for limit in (args.timeout, args.deadline) if limit is not None]
    fn = functools.partial(helpers.run, command, timeout=min(limits) if limits else None)
    call_timeout = None if args.timeout is None else args.timeout + RUN_GRACE
    return Job(fn, (), call_timeout, judge=_judge_run, deadline_grace=RUN_GRACE)


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
                print_line(to_json(entry), bar)
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
        print(to_json({"results": records, "summary": summary}, indent=2))
    elif fmt == "table":
        show(records, job.columns, args.command == "run")
    print(summary_line(summary), file=sys.stdout if fmt == "table" else sys.stderr)
    if interrupted:
        return 130
    return 0 if summary["ok"] == summary["hosts"] else 1


def main(argv: Optional[List[str]] = None) -> int:
    """The command; its exit status (see the module's docstring)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (``| head -1``): stop quietly, as other Unix tools do, with the
        # status of a process that SIGPIPE killed; the buffered rest goes nowhere, not into an
        # "Exception ignored" message when the interpreter flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass
        return 128 + signal.SIGPIPE


def _main(argv: Optional[List[str]]) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character shows its escape
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
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
        print("%s: %s" % (PROG, visible(cli_hints(str(exc)))), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
