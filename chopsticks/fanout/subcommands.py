"""The subcommands: the library job each one runs on the hosts, and how to judge and show a result."""

import dataclasses
import functools
import importlib
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from chopsticks import bulk, facts, helpers, jobs
from chopsticks.fanout.options import UsageError
from chopsticks.fanout.output import FAILED, OK, TIMED_OUT

RUN_GRACE = 5.0  # seconds a `run` call may outlive the command's own timeout (to report it)
# Shown for `facts` without names in a table; --format json or jsonl has them all.
TABLE_FACTS = ("hostname", "ip", "os_release", "kernel", "arch", "cpus", "memory", "load", "uptime",
               "python_version")


# -- what to run ---------------------------------------------------------------------------

@dataclasses.dataclass
class Subcommand:
    """One subcommand, ready: the library job its hosts run (``chopsticks.jobs``: a ``Call``,
    ``Put`` or ``Fetch``, made by ``work(hosts)`` for the group's hosts) and how to judge and
    show a result. ``total_bytes`` makes the progress bar count bytes (put), ``count_bytes``
    count them without a total."""

    work: Callable[[List[str]], jobs.Job]
    judge: Callable[[Any], str] = lambda value: OK
    columns: Optional[List[str]] = None  # for a dict result shown as a table; None: one column
    count_bytes: bool = False
    total_bytes: Optional[int] = None
    deadline_grace: float = 0.0  # how long the fan-out waits past --deadline (for run's reports)
    relay: Optional[int] = None  # put through relays: the trees' degree (``Group.put``'s relay)

    def start(self, group, deadline: Optional[float], progress) -> Iterator[Tuple[str, Any]]:
        if deadline is not None:
            deadline += self.deadline_grace
        work = self.work([tunnel.host for tunnel in group])
        if progress is not None:  # the bar counts a transfer's bytes
            assert isinstance(work, (jobs.Put, jobs.Fetch))
            work = dataclasses.replace(work, progress=progress)
        if self.relay is not None:
            assert isinstance(work, jobs.Put)
            return group.iter_put(work.local_path, work.remote_path, work.mode, make_dirs=work.make_dirs,
                                  timeout=work.timeout, deadline=deadline, progress=work.progress,
                                  if_changed=work.if_changed, relay=self.relay)
        return group.iter_job(work, deadline)


def _everywhere(job: jobs.Job) -> Callable[[List[str]], jobs.Job]:
    """``job`` as ``Subcommand.work``: the same for any hosts."""
    return lambda hosts: job


def _facts(args) -> Subcommand:
    unknown = [name for name in args.names if name not in facts.FACTS]
    if unknown:
        raise UsageError("unknown fact %r; facts are: %s" % (unknown[0], ", ".join(facts.FACTS)))
    names = list(dict.fromkeys(args.names))
    return Subcommand(_everywhere(jobs.Call.for_hosts(facts.all, (names or None,), timeout=args.timeout)),
                      columns=names or list(TABLE_FACTS))


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


def _call(args) -> Subcommand:
    fn = load_function(args.target)
    positional = list(args.args) + _json_arg(args.json_args, "--json-args", list)
    keywords = _json_arg(args.json_kwargs, "--json-kwargs", dict)
    return Subcommand(_everywhere(jobs.Call.for_hosts(fn, tuple(positional), keywords, timeout=args.timeout)))


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


def _run(args) -> Subcommand:
    command = " ".join(args.words)
    if not command.strip():
        raise UsageError("the command is empty")
    # The command's own limit kills its process group on the host and reports what it printed:
    # --timeout, and --deadline too, so that no command goes on running once the run is over.
    # The fan-out waits RUN_GRACE longer than either for those reports.
    limits = [limit for limit in (args.timeout, args.deadline) if limit is not None]
    call_timeout = None if args.timeout is None else args.timeout + RUN_GRACE
    call = jobs.Call.for_hosts(helpers.run, (command,), {"timeout": min(limits) if limits else None},
                               timeout=call_timeout)
    return Subcommand(_everywhere(call), judge=_judge_run, deadline_grace=RUN_GRACE)


def _tree_size(path: str) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(top, name)) for top, _, names in os.walk(path) for name in names
               if os.path.isfile(os.path.join(top, name)) and not os.path.islink(os.path.join(top, name)))


def _put(args) -> Subcommand:
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
    try:
        put = jobs.Put(args.src, args.dst, mode, make_dirs=args.make_dirs, timeout=args.timeout,
                       if_changed=args.if_changed, sessions=args.sessions)
    except ValueError as exc:
        raise UsageError("--sessions: %s" % exc) from None
    columns = ["remote_path", "size", "sha256"] + (["skipped"] if args.if_changed else [])
    if args.relay is not None and args.relay < 2:
        raise UsageError("--relay: a tree's degree is 2 or more (1 would chain every host behind the one before)")
    if args.relay is not None and (os.path.isdir(args.src) or args.sessions):
        raise UsageError("--relay sends one file, over the tunnels: %s" % (
            "%s is a directory" % args.src if os.path.isdir(args.src) else "not with --sessions"))
    return Subcommand(_everywhere(put), columns=columns, count_bytes=True, total_bytes=size, relay=args.relay)


def _fetch(args) -> Subcommand:
    own_paths = UsageError("DST_TEMPLATE must contain {host}, so that each host gets its own path "
                           "(e.g. 'backup/{host}/%s')" % os.path.basename(args.src.rstrip("/")))
    if "{host}" not in args.dst:
        raise own_paths
    try:
        if args.dst.format(host="a") == args.dst.format(host="b"):  # '{{host}}' is the text {host}
            raise own_paths
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError("bad DST_TEMPLATE %r: %s; only {host} is replaced" % (args.dst, exc)) from None
    try:
        bulk.check_sessions(args.sessions, "fetch")
    except ValueError as exc:
        raise UsageError("--sessions: %s" % exc) from None
    return Subcommand(functools.partial(jobs.Fetch.for_hosts, args.src, args.dst, make_dirs=args.make_dirs,
                                        timeout=args.timeout, sessions=args.sessions),
                      columns=["local_path", "size", "sha256"], count_bytes=True)


SUBCOMMANDS = {"facts": _facts, "call": _call, "run": _run, "put": _put, "fetch": _fetch}
