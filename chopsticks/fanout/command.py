"""``python -m chopsticks.fanout``: one job on many hosts, from the shell. CLI layer.

    python -m chopsticks.fanout -H 'web-[001-500]' facts hostname os_release
    python -m chopsticks.fanout -f hosts.txt run 'systemctl is-active nginx'
    python -m chopsticks.fanout -H db-1,db-2 call mypkg.checks:disk_ok --json-args '["/var"]'

Results print as a table on a terminal and as JSON lines otherwise, then a summary. The exit
status (``fanout.run``) is 0 when every host succeeded, 1 when any failed, timed out or was
not started (``--max-fail``), 2 for a usage error (always one line, never a traceback), 3
when some were unreachable (no login, no agent), 4 when some were unreachable and others
failed, 130 when interrupted: Ctrl-C closes every tunnel and prints what finished and, by
name, what did not; 141, quietly, when the reader of the output goes away (``| head -1``).
"""

import dataclasses
import getpass
import io
import os
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, List, Optional

from chopsticks.errors import ChopsticksError, MissingExtra
from chopsticks.fanout import folded, out_dir
from chopsticks.fanout.subcommands import SUBCOMMANDS, Subcommand
from chopsticks.fanout.options import PROG, UsageError, build_parser
from chopsticks.fanout.output import (
    cli_hints, configure_logging, kept, print_line, progress_bar, show, summarize, summary_line, to_json,
)
from chopsticks.fanout import defaults
from chopsticks.fanout.run import Run, exit_status
from chopsticks.fanout.targets import Targets, explain
from chopsticks.logs import visible
from chopsticks.options import TunnelOptions


# -- hosts and tunnels ----------------------------------------------------------------------

def become_password(args) -> Optional[str]:
    """``--ask-become-pass``: the sudo password, asked once for every host."""
    return ask(args, "ask_become_pass", "sudo password: ")


def ask(args, option: str, prompt: str) -> Optional[str]:
    """A secret the option asks for, read once (from the terminal, else stdin)."""
    if not getattr(args, option):
        return None
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise UsageError("--%s: no answer (end of input)" % option.replace("_", "-")) from None


def _pipe_tunnel(args, name: str, options: TunnelOptions):
    from chopsticks.containers import Docker
    from chopsticks.pipe_tunnels import Local, Sudo

    if args.transport == "docker":
        if args.image:
            return Docker(name, image=args.image, engine=args.engine, tunnel_options=options)
        return Docker(name, container=name, engine=args.engine, tunnel_options=options)
    if args.sudo:
        return Sudo(args.sudo, name=name, tunnel_options=options)
    return Local(name, tunnel_options=options)


def make_group(args, targets: Targets):
    """The group the command works on: each host's tunnel, or with ``--container`` the tunnel
    into that container through each host's (``via=``)."""
    if args.ask_become_pass and not args.sudo:
        raise UsageError("--ask-become-pass is for --sudo")
    if not args.container:
        return _hosts_group(args, targets, TunnelOptions().given(python=args.python or None,
                                                                  connect_timeout=args.connect_timeout or None))
    from chopsticks.containers import Docker
    from chopsticks.group import Group

    if args.transport == "docker" or args.workers not in (None, 1) or args.cluster:
        raise UsageError("--container is not for %s" % ("--transport docker" if args.transport == "docker"
                                                         else "--workers" if args.cluster is None else "--cluster"))
    hosts_group = _hosts_group(args, targets, TunnelOptions().given(connect_timeout=args.connect_timeout or None))
    options = TunnelOptions().given(python=args.python or None, connect_timeout=args.connect_timeout or None)
    try:
        return Group([Docker(args.container, container=args.container, engine=args.engine, via=host,
                             tunnel_options=options) for host in hosts_group], concurrency=args.concurrency)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def close_group(group) -> None:
    """Close every tunnel of ``group``, and then those they went through (``--container``)."""
    from chopsticks.group import Group

    group.close()
    Group(list({id(tunnel.via): tunnel.via for tunnel in group if tunnel.via is not None}.values())).close()


def ssh_options(args) -> Dict[str, Any]:
    """The SSH options the command line gives, as ``SSHOptions``'s keywords."""
    ssh: Dict[str, Any] = {"user": args.user, "port": args.port, "key": args.key, "jump": args.jump,
                           "known_hosts": args.known_hosts, "host_key_policy": args.host_key_policy,
                           "ssh_config": args.ssh_config}
    ssh = {name: value for name, value in ssh.items() if value is not None}
    if args.jump:
        ssh["jump"] = [hop for hop in args.jump.split(",") if hop]
    if args.no_agent:
        ssh["agent"] = False
    return ssh


def _hosts_group(args, targets: Targets, tunnel_options: TunnelOptions):
    from chopsticks.group import Group
    from chopsticks.ssh_tunnel import SSHTunnel
    from chopsticks.transports.ssh_options import SSHOptions

    names = targets.names

    if args.transport != "docker" and (args.image or (args.engine and not args.container)):
        raise UsageError("%s is for --transport docker" % ("--image" if args.image else "--engine"))
    if getattr(args, "relay", None) is not None:
        if args.transport in ("local", "docker") or args.container:
            raise UsageError("--relay is for SSH hosts%s" % (" without --container" if args.container else ""))
        if args.workers not in (None, 1) or args.cluster:
            raise UsageError("--relay is not for %s" % ("--cluster" if args.cluster else "--workers"))
    if args.transport in ("local", "docker"):
        ssh_only = [flag for flag, value in (("--user", args.user), ("--port", args.port), ("--key", args.key),
                                             ("--jump", args.jump)) if value]
        if args.sudo and args.transport == "docker":
            ssh_only.append("--sudo")
        if args.workers not in (None, 1):
            ssh_only.append("--workers")
        if args.cluster:
            ssh_only.append("--cluster")
        if ssh_only:
            raise UsageError("%s is not for --transport %s" % (ssh_only[0], args.transport))
        tunnel_options = tunnel_options.given(sudo_password=become_password(args))
        try:
            tunnels = [_pipe_tunnel(args, name, tunnel_options) for name in names]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return Group(tunnels, concurrency=args.concurrency)
    ssh = ssh_options(args)
    if args.ask_pass:
        ssh["password"] = ask(args, "ask_pass", "SSH password: ")
    if args.ask_passphrase:
        ssh["passphrase"] = ask(args, "ask_passphrase", "Key passphrase: ")
    tunnel_options = tunnel_options.given(sudo=args.sudo or None, sudo_password=become_password(args))
    try:
        options = SSHOptions(**ssh)
        # a host the inventory says how to reach gets options of its own (its address, port, user)
        members = [SSHTunnel(name, options=dataclasses.replace(options, **targets.reach(name)),
                             tunnel_options=tunnel_options) if targets.reach(name) else name for name in names]
        return Group(members, concurrency=args.concurrency, options=options, tunnel_options=tunnel_options,
                     workers=args.workers, cluster=args.cluster or None)
    except (ValueError, MissingExtra) as exc:
        raise UsageError(str(exc)) from None


# -- running --------------------------------------------------------------------------------

@contextmanager
def interrupts_in_this_greenlet():
    """Ctrl-C raises ``KeyboardInterrupt`` in the calling greenlet, at its next switch, never
    inside one of the hub's callbacks: gevent would print that one as a crash before passing it
    on, and the callback (a tunnel's read) would stop halfway."""
    import gevent
    main = gevent.getcurrent()
    hub = gevent.get_hub()
    inside = [True]

    def interrupt():
        if inside[0]:  # not once the block is left: then the interrupt has nowhere to go
            main.throw(KeyboardInterrupt)

    def on_sigint(_signum, _frame):
        if gevent.getcurrent() is main:
            raise KeyboardInterrupt
        hub.loop.run_callback(interrupt)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        inside[0] = False
        signal.signal(signal.SIGINT, previous)


def execute(args, subcommand: Subcommand, group) -> int:
    import structlog
    log = structlog.get_logger("chopsticks.fanout")
    fmt = args.format or ("table" if sys.stdout.isatty() or args.fold else "jsonl")
    records: List[Dict[str, Any]] = []
    writer = out_dir.OutDir(args.out_dir, args.command == "run") if args.out_dir else None
    bar = progress_bar(len(group), bool(sys.stderr.isatty() and not args.no_progress), subcommand.count_bytes,
                       subcommand.total_bytes)

    def emit(entry: Dict[str, Any], value: Any, finished: bool) -> None:
        if writer is not None and finished:
            writer.write(entry, value)
        records.append(kept(entry, fmt == "jsonl"))
        if fmt == "jsonl":
            print_line(to_json(entry), bar)

    def start(hosts: List[str], seconds_left: Optional[float]):
        names = set(hosts)
        part = group if len(hosts) == len(group) else group.select(lambda tunnel: tunnel.host in names)
        return subcommand.start(part, seconds_left, bar.update if subcommand.count_bytes else None)

    run = Run([tunnel.host for tunnel in group], subcommand.judge, bar, subcommand.count_bytes, emit)
    started = time.monotonic()
    log.debug("fanout_started", hosts=len(group), command=args.command)
    with interrupts_in_this_greenlet():
        try:
            run.go(start, args.batch, args.max_fail, args.deadline)
        finally:
            bar.close()
            try:
                close_group(group)
            except KeyboardInterrupt:
                run.interrupted = True
    summary = summarize(run.counts, len(group), time.monotonic() - started)
    log.debug("fanout_finished", **summary)
    if args.failed_to:  # as -f reads them back: a host's own name, not 'HOST -> NAME' (--container)
        given = {tunnel.host: tunnel.via.name if tunnel.via is not None else tunnel.host for tunnel in group}
        write_failed_to(args.failed_to, [given[host] for host in run.not_ok()])
    order = {tunnel.host: index for index, tunnel in enumerate(group)}
    records.sort(key=lambda r: order[r["host"]])
    if fmt == "json":
        document = {"results": records, "summary": summary}
        if args.fold:
            document.update(folded.as_json(records, subcommand.columns))
        print(to_json(document, indent=2))
    elif fmt == "table" and folded.wanted(args.fold, args.command, records, sys.stdout.isatty()):
        folded.show(records, subcommand.columns, args.command == "run")
    elif fmt == "table":
        show(records, subcommand.columns, args.command == "run")
    print(summary_line(summary), file=sys.stdout if fmt == "table" else sys.stderr)
    status = exit_status(run.counts, run.interrupted)
    return 1 if status == 0 and writer is not None and writer.failed else status


def check_failed_to(path: Optional[str]) -> None:
    """``--failed-to FILE`` must be writable where it is: refused before anything runs."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError("--failed-to: directory %r does not exist" % folder)
    if os.path.isdir(path):
        raise UsageError("--failed-to: %r is a directory" % path)
    if not os.access(folder, os.W_OK):
        raise UsageError("--failed-to: directory %r is not writable" % folder)


def write_failed_to(path: str, hosts: List[str]) -> None:
    """The hosts that did not succeed, one per line, so that ``-f FILE`` reruns just them."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(host + "\n" for host in hosts))


def _inspect(args) -> int:
    """``--list-hosts`` and ``--explain HOST``: what a run would do, printed; nothing started."""
    from chopsticks.transports.ssh_options import SSHOptions
    if args.explain:
        targets = Targets(args) if args.inventory else None
        reach = targets.reach(args.explain) if targets is not None else {}
        try:
            options = SSHOptions(**ssh_options(args))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(explain(args.explain, options, reach))
        return 0
    for name in Targets(args).names:
        print(name)
    return 0


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
    sources: Dict[str, str] = {}
    try:
        argv = defaults.expand_files(sys.argv[1:] if argv is None else list(argv))
        argv, sources = defaults.from_environment(argv)
        args = build_parser().parse_args(argv)
        if args.explain or args.list_hosts:
            return _inspect(args)
        if args.command is None:
            raise UsageError("a command is needed: facts, call, run, put or fetch (see --help)")
        subcommand = SUBCOMMANDS[args.command](args)
        folded.check(args.fold, args.format)
        out_dir.check(args.out_dir)
        check_failed_to(args.failed_to)
        targets = Targets(args)
        configure_logging(args.quiet, args.verbose, args.log_format)
        group = make_group(args, targets)
    except UsageError as exc:
        print("%s: error: %s" % (PROG, defaults.blame(str(exc), sources)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    try:
        return execute(args, subcommand, group)
    except ChopsticksError as exc:
        print("%s: %s" % (PROG, visible(cli_hints(str(exc)))), file=sys.stderr)
        return 1
