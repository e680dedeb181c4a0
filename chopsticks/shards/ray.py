"""Shards as Ray actors: a fan-out's shards spread over the nodes of a Ray cluster. Shard layer.

The driver's backend seam (``driver.py``) with Ray underneath. Each shard is one actor
(``ShardActor``), placed node by node, one per CPU each node offers (``node_slots``), so a
group's shards land on every node. The
actor runs a ``core.ShardCore`` in a gevent hub of its own (``hub_thread.HubThread``: a hub in
a method's thread would run only while that method runs, and the tunnels kept open between
fan-outs need it running), so libssh2 sessions are opened only inside the actor's process.

Everything a shard says to the driver goes through one Ray generator method, ``messages``,
that lives as long as the actor: each item is a batch of what the shard said since the last
one (its runs' events, tagged with the run, and its questions for the driver's import service).
One thread in the driver reads it and hands each batch to the driver's hub. The driver speaks
through actor methods: ``run`` (a ``RunOrder``), ``cancel``, ``answer`` (to a question),
``close``. When the actor's stream ends in an error (its node stopped, its process killed),
the shard is lost: the sink hears it once, with the shard's pid and node.

Ray is an optional extra (``pip install chopsticks[ray]``): it is imported only here, only when
a group asks for a cluster. Every node runs the actors from its own installed chopsticks (the
same Python, Ray and chopsticks as the driver's), must reach the hosts and read the SSH key,
known_hosts and ssh_config the driver names: the first shard's start checks that on every
node at once and raises one ``ClusterError`` with one line per node that cannot.
"""

import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import gevent
import gevent.event

from chopsticks.errors import ClusterError, MissingExtra
from chopsticks.results import loads_result
from chopsticks.shards.core import RunOrder, ShardSide, ShardSpec, answer_for, deliver
from chopsticks.shards.hub_thread import HubThread, Inbox
from chopsticks.shards.process import pickled, unsendable_result

if TYPE_CHECKING:
    from chopsticks.shards.driver import Sink

EXTRA = "pip install chopsticks[ray]"
# Calls the driver may have in flight to one actor at once: the ``messages`` stream holds one
# thread of the actor's pool for its whole life; ``run``, ``cancel``, ``answer`` and ``close``
# each return at once, so a few more threads keep them from queueing behind each other.
ACTOR_THREADS = 8
# What one item of a shard's ``messages`` stream gathers: what the shard says within
# BATCH_WINDOW seconds of the first message, at most BATCH_MOST messages. Each item is a Ray
# object for the driver to receive; hosts that finish together then cost one, at the price of
# up to 5 ms of latency, small beside a call's. (Not tuned: at 200 hosts, under a load of 10+
# on 2 cores, the driver's CPU per call did not move beyond the noise either way.)
BATCH_WINDOW = 0.005
BATCH_MOST = 1000
# How long a shard waits for the driver to answer a question of its import service; the
# remote that asked gets "not found" after that (the driver is gone or wedged).
ASK_TIMEOUT = 60.0
# How long ``close`` waits for the actor to close its tunnels before killing it.
CLOSE_TIMEOUT = 10.0
# How long the nodes have to say whether they can read the SSH files (a first fan-out waits).
CHECK_TIMEOUT = 60.0


def import_ray() -> Any:
    """The ``ray`` module; MissingExtra naming the extra when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtra("a Group with cluster= runs its shards as Ray actors, and Ray is not installed: "
                           "%s" % EXTRA) from exc
    return ray


def connect(cluster: Any) -> Any:
    """Join the cluster (``cluster``: an address; True or 'auto': ``RAY_ADDRESS``, else the
    cluster running on this machine), unless this process already has; the ``ray`` module."""
    ray = import_ray()
    if not ray.is_initialized():
        address = (os.environ.get("RAY_ADDRESS") or "auto") if cluster is True or cluster == "auto" else cluster
        # the shards' output and Ray's own INFO lines would land among the caller's
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return ray


def node_slots(ray: Any) -> List[Optional[str]]:
    """The alive nodes' IDs, each once per CPU it offers, interleaved node by node (shard i
    goes to slot i modulo their number, so shards fill the nodes evenly); [None] if none
    offers a CPU. In a stable order: ``ray.nodes()`` lists them in any order, call to call
    (two shards once landed on one node of two that way)."""
    alive = sorted((node for node in ray.nodes() if node["Alive"]), key=lambda node: node["NodeID"])
    per_node = [[node["NodeID"]] * int(node.get("Resources", {}).get("CPU", 0)) for node in alive]
    slots: List[Optional[str]] = [ids[i] for i in range(max(map(len, per_node), default=0))
                                  for ids in per_node if i < len(ids)]
    return slots or [None]


def cluster_cpus(ray: Any) -> int:
    """The CPUs the cluster offers (at least 1): the default number of shards."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# -- in the actor -------------------------------------------------------------------------------

def unreadable(paths: List[str]) -> List[str]:
    """Of ``paths``, those this process cannot read, each with why."""
    problems = []
    for path in paths:
        try:
            with open(os.path.expanduser(path), "rb"):
                pass
        except OSError as exc:
            problems.append("%s (%s)" % (path, exc.strerror or exc))
    return problems


def named_files(spec: ShardSpec) -> List[str]:
    """The SSH files the driver names for these hosts (defaults left out: OpenSSH too skips a
    default key or known_hosts that is not there)."""
    named = []
    for host in spec.hosts:
        options = host.options
        for field in (options.key, options.known_hosts, options.ssh_config or None):
            for path in ([field] if isinstance(field, str) else list(field or ())):
                if path not in named:
                    named.append(path)
    return named


def where() -> Tuple[str, int]:
    """This process's node address and pid."""
    import ray
    return ray.util.get_node_ip_address(), os.getpid()


class ShardActor:
    """One shard in a Ray actor: a ``core.ShardSide`` in a hub thread of its own."""

    def __init__(self, spec: ShardSpec):
        self.hub = HubThread("chopsticks-shard")
        self.outbox: "queue.Queue[Any]" = queue.Queue()
        self.side: ShardSide = self.hub.call(ShardSide, spec, self.send, ASK_TIMEOUT)

    def where(self) -> Tuple[str, int]:
        return where()

    def send(self, message: Tuple[Any, ...]) -> None:
        """Queue ``message`` for ``messages``, pickled once, now: a result whose value does not
        pickle is that host's SerializationError, and nothing else of the batch is lost."""
        self.outbox.put(pickled(message, unsendable_result))

    def answer(self, ask_id: int, ok: bool, value: Any) -> None:
        self.hub.call(self.side.answer, ask_id, ok, value)

    def run(self, run_id: int, order: RunOrder) -> None:
        """Start ``order``; its events go out through ``messages``."""
        self.hub.call(self.side.run, run_id, order)

    def cancel(self, run_id: int) -> None:
        self.hub.call(self.side.cancel, run_id)

    def messages(self):  # a Ray generator method: the shard's one stream to the driver
        while True:
            batch = [self.outbox.get()]
            ends = time.monotonic() + BATCH_WINDOW
            while batch[-1] is not None and len(batch) < BATCH_MOST:
                try:
                    batch.append(self.outbox.get(timeout=max(0.0, ends - time.monotonic())))
                except queue.Empty:
                    break
            closed = batch[-1] is None
            if closed:
                batch.pop()
            if batch:
                yield batch
            if closed:
                return

    def close(self) -> None:
        """Stop the runs, close the tunnels, end ``messages``."""
        self.hub.call(self.side.close, CLOSE_TIMEOUT)
        self.hub.stop()
        self.outbox.put(None)


def _probe(paths: List[str]) -> Tuple[str, List[str]]:
    """A Ray task, on each node: its address, and which of ``paths`` it cannot read."""
    return where()[0], unreadable(paths)


def check_nodes(ray: Any, spec: ShardSpec) -> None:
    """ClusterError, one line per node, if a node cannot read the SSH files ``spec`` names."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = named_files(spec)
    if not paths:
        return
    probe = ray.remote(num_cpus=0)(_probe)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(paths)
            for node in nodes]
    try:  # a wait that leaves the hub running; a node that cannot answer is a node that cannot run shards
        found = gevent.get_hub().threadpool.apply(ray.get, (refs,), {"timeout": CHECK_TIMEOUT})
    except ray.exceptions.GetTimeoutError:
        raise ClusterError("the Ray cluster's nodes did not say within %ss whether they can read the SSH files "
                           "the driver names (%s)" % (CHECK_TIMEOUT, ", ".join(paths))) from None
    lines = ["node %s cannot read %s" % (address, ", ".join(problems)) for address, problems in found if problems]
    if lines:
        raise ClusterError("the Ray cluster cannot run these hosts' shards: every node must read the SSH files "
                           "the driver names:\n  " + "\n  ".join(lines))


# -- in the driver ------------------------------------------------------------------------------

class RayShard:
    """The driver's handle on one shard actor (the seam's ``Handle``)."""

    def __init__(self, actor: Any, spec: ShardSpec, sink: "Sink", ray: Any):
        self.actor = actor
        self.label = "%s (a Ray actor, starting)" % spec.label
        self._name = spec.label
        self._sink = sink
        self._ray = ray
        self._closing = False
        self._ended = gevent.event.Event()
        self.pid: Optional[int] = None
        self.node: Optional[str] = None
        # the reader thread hands what it reads to the driver's hub
        self._inbox = Inbox(self._take)
        self._reader = threading.Thread(target=self._read, name="chopsticks-%s" % spec.label, daemon=True)
        self._reader.start()

    def _read(self) -> None:  # in its own thread: Ray's waits would block the driver's hub
        ray = self._ray
        why = "its message stream ended"
        try:
            self.node, self.pid = ray.get(self.actor.where.remote())
            self.label = "%s (Ray actor pid %d on node %s)" % (self._name, self.pid, self.node)
            for ref in self.actor.messages.options(num_returns="streaming").remote():
                self._inbox.put(("batch", ray.get(ref)))
        except Exception as exc:  # a Ray error: the actor, its node or the cluster went away
            text = str(exc).strip()
            why = "%s: %s" % (type(exc).__name__, text.splitlines()[0] if text else "")
        self._inbox.put(("end", why))

    def _take(self, item: Tuple[str, Any]) -> None:  # in the driver's hub
        kind, what = item
        if kind == "batch":
            self._deliver(what)
        else:
            self._end(what)

    def _end(self, why: str) -> None:  # in the driver's hub
        self._inbox.stop()
        self._ended.set()
        self._sink.lost("it was closed" if self._closing else why)  # a run still waiting on it ends

    def _deliver(self, batch: List[bytes]) -> None:  # in the driver's hub
        for data in batch:
            deliver(self._sink, loads_result(data), self._ask)  # our own actor's: a result's types only

    def _answer(self, ask_id: int, kind: str, key: Any) -> None:
        self.actor.answer.remote(ask_id, *answer_for(self._sink.answer, kind, key))

    def _ask(self, ask_id: int, kind: str, key: Any) -> None:
        gevent.spawn(self._answer, ask_id, kind, key)  # the import service may read files: a greenlet

    def run(self, run_id: int, order: RunOrder) -> None:
        if self._closing:  # as a closed shard process's pipe would
            raise BrokenPipeError("%s is closed" % self.label)
        self.actor.run.remote(run_id, order)

    def cancel(self, run_id: int) -> None:
        self.actor.cancel.remote(run_id)

    def close(self) -> None:
        """Close the shard's tunnels, then end the actor (killed if it does not answer)."""
        self._closing = True
        self.actor.close.remote()
        self._ended.wait(CLOSE_TIMEOUT)
        self._ray.kill(self.actor)




class RayBackend:
    """Shards as actors on the cluster ``cluster`` names (the seam's ``Backend``)."""

    local_files = False  # a node's own, which need not be this machine's
    def __init__(self, cluster: Any):
        self.ray = connect(cluster)
        self._actor_class = self.ray.remote(ShardActor)
        self._checked = False
        self._started = 0

    def cores(self) -> int:
        """The CPUs the cluster offers: ``workers='auto'`` (the default with a cluster) is one
        shard per CPU, capped by the fleet size."""
        return cluster_cpus(self.ray)

    def start(self, spec: ShardSpec, sink: "Sink") -> RayShard:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not self._checked:
            check_nodes(self.ray, spec)
            self._checked = True
        slots = node_slots(self.ray)
        place = slots[self._started % len(slots)]
        self._started += 1
        # num_cpus=0: a shard asked for beyond the cluster's CPUs starts anyway, where one
        # reserving a CPU would wait for it forever. Ray's SPREAD strategy, and soft node
        # affinity too, put two such actors on one node of two here (a node just started is
        # passed over), so each shard goes to its node, hard: a node gone since fails that
        # shard's start, its hosts ShardLost, and the next fan-out places it again.
        strategy = NodeAffinitySchedulingStrategy(place, soft=False) if place else "SPREAD"
        actor = self._actor_class.options(scheduling_strategy=strategy, max_concurrency=ACTOR_THREADS, num_cpus=0,
                                          max_restarts=0).remote(spec)
        return RayShard(actor, spec, sink, self.ray)
