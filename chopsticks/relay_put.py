"""Pushes through relays: a file goes once to each intermediate, which passes it on. Controller-side.

``Group.put(..., relay=...)``. The group's tunnels and the tunnels they go through (``via=``)
form trees whose roots the controller reaches directly. Each chunk of the file goes once to
each root, in one ``TEE`` frame that says where it goes next: the root hands it to its own
copy (when it is one of the group's hosts) and, in a TEE frame of its own, into the stdin of
each agent it relays, and so on down (``agent.main.Agent.on_tee``). So the controller sends
the file once per root, not once per host, and every hop passes chunks on as they arrive.

The rest is a direct put's: every host runs ``agent.files.receive`` on a stream of its own
and checks size and SHA-256 before it renames, and the controller checks its account. Flow
control is per host too: a chunk goes once every host still in the tree has credit for it on
its own stream, and every relayed host on its pipe's stdin (the credit its intermediate
grants as it writes there), so no hop holds more than its windows. The slowest host sets
its tree's pace, for ``STALL`` seconds at most: a host that grants no credit for that long
is cut from the tree (``CallTimeout``; it is closed, so the hosts below it fail naming it)
and the others go on. A relay that dies fails the hosts below it with ``TunnelClosed``
naming it; they are not re-reached directly.

``relay=N`` builds the trees: the group's first N hosts are reached directly, and each host
relays to N more, reached by its own ``ssh`` client with the group's SSH options, breadth
first (``SSHTunnel(host, via=...)``). ``relay=True`` uses the ``via=`` tunnels as they are.
"""

import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import gevent
import gevent.pool
import msgpack

from chopsticks import local_files, transfer
from chopsticks.agent import files as remote_files
from chopsticks.connection import Connection, StreamState
from chopsticks.errors import CallTimeout, ChopsticksError, TransferError
from chopsticks.results import ErrorResult
from chopsticks.sources import Source
from chopsticks.transports.relayed import RelayPipe
from chopsticks.wire import protocol

# How long the hosts of a tree wait for one host's credit before it is cut from the tree.
STALL = 60.0


class _Node:
    """One tunnel of a relay tree: a host of the group (``key``: its name in the results),
    or an intermediate only, or both."""

    def __init__(self, tunnel: Any, key: Optional[str]):
        self.tunnel = tunnel
        self.key = key
        self.parent: Optional["_Node"] = None
        self.children: List["_Node"] = []
        self.conn: Optional[Connection] = None
        self.state: Optional[StreamState] = None  # its own copy's stream
        self.future: Any = None  # its own copy's ``receive``
        self.result: Any = None  # its host's result, once known

    @property
    def pipe(self) -> RelayPipe:
        assert self.conn is not None and isinstance(self.conn.pipe, RelayPipe)
        return self.conn.pipe

    def sending(self) -> bool:
        """Still receiving its own copy."""
        return self.future is not None and self.result is None and not self.future.done() and not self.dead()

    def dead(self) -> bool:
        return self.conn is None or self.conn.closed

    def live(self) -> bool:
        """Anything left to send to it: its copy, or a copy below it."""
        return not self.dead() and (self.sending() or any(child.live() for child in self.children))

    def fail(self, error: BaseException) -> None:
        if self.key is not None and self.result is None:
            self.result = ErrorResult.from_exception(error)


def check(relay: Any) -> None:
    """``relay=``: None, True, or a degree (an int from 2)."""
    if relay is None or relay is True:
        return
    if type(relay) is not int or relay < 2:
        raise ValueError("relay= takes True (the tunnels' via=) or a tree's degree, an int from 2 (1 would chain "
                         "every host behind the one before), not %r" % (relay,))


def tree_of(tunnels: List[Any], degree: int) -> Tuple[List[Any], List[Any]]:
    """``relay=N``: the group's direct SSH tunnels as a tree of degree N; returns the
    tunnels to send to (in the group's order) and those made for the tree (to close after)."""
    from chopsticks.ssh_tunnel import SSHTunnel
    for tunnel in tunnels:
        if not isinstance(tunnel, SSHTunnel) or tunnel.via is not None:
            raise ValueError("relay=%d builds a tree of SSH hosts; %r is not one (give relay=True to push "
                             "through the via= tunnels as they are)" % (degree, tunnel))
    placed = list(tunnels[:degree])
    made = []
    for index, tunnel in enumerate(tunnels[degree:]):
        parent = placed[index // degree]
        child = SSHTunnel(tunnel.name, via=parent, options=tunnel.options, tunnel_options=tunnel.tunnel_options,
                          modules=tunnel.modules)
        placed.append(child)
        made.append(child)
    return placed, made


def iter_put(tunnels: List[Any], keys: List[str], source: Source, remote_path: Optional[str], mode: Optional[int],
             make_dirs: bool, timeout: Optional[float], progress: Any, if_changed: bool,
             concurrency: int) -> Iterator[Tuple[str, Any]]:
    """Send ``source`` to each of ``tunnels`` (named ``keys`` in the results) through the
    trees their ``via=`` make; ``(key, result)`` for each, in order, once all are done."""
    mode = source.mode if mode is None else mode
    nodes = _nodes(tunnels, keys)
    members = [node for node in nodes.values() if node.key is not None]
    pool = gevent.pool.Pool(concurrency)
    timer = gevent.Timeout(timeout) if timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        pool.map(lambda node: _start(node, source, remote_path, mode, make_dirs, if_changed), members)
        _pump(nodes, source, progress)
        _finish(members, source)
        for node in members:
            if if_changed and isinstance(node.result, dict):
                node.result.setdefault("skipped", False)
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        for node in members:
            node.fail(CallTimeout("[%s] the transfer did not finish within %ss" % (node.tunnel.host, timeout)))
    finally:
        if timer is not None:
            timer.close()
        pool.kill()
        for node in members:
            _close_stream(node, "the controller stopped sending")
    for node in members:
        yield str(node.key), node.result


def _nodes(tunnels: List[Any], keys: List[str]) -> Dict[int, _Node]:
    """Every tunnel of the trees, by id: the group's and the intermediates above them."""
    nodes: Dict[int, _Node] = {}
    for tunnel, key in zip(tunnels, keys):
        nodes[id(tunnel)] = _Node(tunnel, key)
    for tunnel in tunnels:
        child = nodes[id(tunnel)]
        while child.tunnel.via is not None and child.parent is None:
            via = child.tunnel.via
            parent = nodes.get(id(via))
            if parent is None:
                parent = nodes[id(via)] = _Node(via, None)
            child.parent = parent
            parent.children.append(child)
            child = parent
    return nodes


def _start(node: _Node, source: Source, remote_path: Optional[str], mode: int, make_dirs: bool,
           if_changed: bool) -> None:
    """Connect a host of the group (and what it goes through), and start its ``receive``."""
    target = None if remote_path is None else remote_path.replace("{host}", node.key or "")
    try:
        if if_changed and target is not None:
            node.result = transfer.already_there(node.tunnel, source, target, mode)
            if node.result is not None:
                return
        node.conn = conn = node.tunnel.connection()
        state = conn.open_stream()
        node.future = transfer._start(conn, state, remote_files.receive, state.sid, target, mode, source.mtime_ns,
                                      make_dirs)
        node.state = state
    except ChopsticksError as exc:
        node.fail(exc)
    _connect_above(node)


def _connect_above(node: _Node) -> None:
    """The intermediates above a node: their connections, now that it connected through them."""
    while node.parent is not None:
        parent = node.parent
        if parent.conn is None and parent.tunnel.connected:
            parent.conn = parent.tunnel._conn
        node = parent


def _pump(nodes: Dict[int, _Node], source: Source, progress: Any) -> None:
    roots = [node for node in nodes.values() if node.parent is None]
    index = 0
    while index < source.pieces:
        piece = source.piece(index)
        live = [root for root in roots if root.live()]
        if not live:
            return
        needs: List[Tuple[_Node, StreamState, int]] = []
        payloads = [(root, protocol.tee_payload(_route(root, len(piece), needs), piece)) for root in live]
        if not _credit(needs):
            continue  # a host was cut, or died: route this piece again without it
        # the relayed hosts' writers, held so no frame of theirs is half under way: deepest
        # first, the order of any write to them (a host's lock, then its relay's, ...)
        relayed: Dict[int, Tuple[int, Connection]] = {}
        for node, _, _ in needs:
            if node.parent is not None and node.conn is not None:
                relayed[id(node)] = (_depth(node), node.conn)
        locks = [conn.writer.lock for _, conn in sorted(relayed.values(), key=lambda pair: -pair[0])]
        for lock in locks:
            lock.acquire()
        try:
            if not all(state.window.fits(size) for _, state, size in needs):
                continue  # another writer took credit meanwhile
            for _, state, size in needs:
                state.window.spend(size)
            for root, payload in payloads:
                try:
                    assert root.conn is not None  # live
                    root.conn.writer.write(protocol.TEE, 0, payload)
                except OSError:
                    pass  # it ended: its hosts fail with the reason
        finally:
            for lock in locks:
                lock.release()
        if progress is not None:
            for node, state, _ in needs:
                if state is node.state:
                    progress(len(piece))
        index += 1


def _depth(node: _Node) -> int:
    depth = 0
    while node.parent is not None:
        node, depth = node.parent, depth + 1
    return depth


def _route(node: _Node, size: int, needs: List[Tuple[_Node, StreamState, int]]) -> bytes:
    """The node's packed route for one piece of ``size`` bytes, noting the credit it needs."""
    own = None
    if node.sending():
        assert node.state is not None
        own = node.state.sid
        needs.append((node, node.state, size))
    entries = []
    for child in node.children:
        if child.live():
            route = _route(child, size, needs)
            stdin = child.pipe.stdin_stream
            entries.append([stdin.sid, route])
            needs.append((child, stdin, protocol.tee_frame_size(len(route), size)))
    return msgpack.packb([own, entries])


def _credit(needs: List[Tuple[_Node, StreamState, int]]) -> bool:
    """Wait until every stream has credit for its share; False if a host was cut for granting
    none within STALL seconds, or died meanwhile."""
    deadline = time.monotonic() + STALL
    for node, state, size in needs:
        while not state.window.fits(size):
            if state.error is not None or node.dead() or (state is node.state and not node.sending()):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                _cut(node, state)
                return False
            state.wake.clear()
            state.wake.wait(left)
    return True


def _cut(node: _Node, state: StreamState) -> None:
    error = CallTimeout("[%s] it took no more of the file for %ss and was cut from its relay tree"
                        % (node.tunnel.host, STALL))
    if state is node.state:
        node.fail(error)  # its own copy stalls: it stops receiving, and still relays
        _close_stream(node, str(error))
        return
    for below in _subtree(node):
        below.fail(error if below is node else TransferError("[%s] the relay %s above it was cut from the tree"
                                                             % (below.tunnel.host, node.tunnel.host)))
    gevent.spawn(node.tunnel.close)  # its pipe stalls: what is under way to it cannot be taken back


def _subtree(node: _Node) -> Iterator[_Node]:
    yield node
    for child in node.children:
        yield from _subtree(child)


def _finish(members: List[_Node], source: Source) -> None:
    """End each host's stream, then take each host's account."""
    changed = source.change()
    for node in members:
        if node.state is not None and node.conn is not None and not node.conn.closed and node.result is None:
            info = {"size": source.size, "sha256": source.sha256} if changed is None else {"abort": changed}
            try:
                node.conn.stream_end(node.state, info)
            except OSError:
                pass
    for node in members:
        if node.future is None or node.result is not None:
            continue
        try:
            node.result = _account(node, node.future.result(), source)
        except ChopsticksError as exc:
            if changed is not None:
                exc = TransferError("[%s] %s; the remote file was left as it was" % (node.tunnel.host, changed))
            node.fail(exc)


def _account(node: _Node, answer: Any, source: Source) -> Dict[str, Any]:
    result = local_files.checked_account(node.tunnel.host, answer, {"remote_path": str, "size": int, "sha256": str})
    if (result["size"], result["sha256"]) != (source.size, source.sha256):
        raise TransferError("[%s] the host wrote %d bytes with SHA-256 %s; %d bytes with SHA-256 %s were sent"
                            % (node.tunnel.host, result["size"], result["sha256"], source.size, source.sha256))
    result.pop("created", None)
    result.update(sha1sum=source.sha1, local_path=source.name)
    return result


def _close_stream(node: _Node, why: str) -> None:
    """Forget a host's stream; one not ended yet gets an END that aborts it."""
    if node.state is None or node.conn is None:
        return
    state, node.state = node.state, None
    if node.future is not None and not node.future.done() and not node.conn.closed:
        try:
            node.conn.writer.send([(protocol.END, state.sid, msgpack.packb({"abort": why}))])
        except OSError:
            pass
    node.conn.close_stream(state)
