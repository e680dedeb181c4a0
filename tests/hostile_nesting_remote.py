"""A hostile remote for the tunnels remote code opens, and for relayed pipes. Two roles:

As a module (imported by a real agent from the controller, like ``remote_helpers``): remote
code that sends the controller the tunnel requests (``protocol.TUNNEL``) it crafts, not the
ones ``agent.nested`` would send, and reports what came back. Functions only; nothing runs
at import.

As a script, the ``python`` of an intermediate tunnel (``hostile_nesting_remote.py
SCRIPT.json -S -c STAGE1``): the real agent, whose ``chopsticks.agent.relay`` (loaded from the
controller as usual) is crafted as ``relay`` in the script says:

- ``overflow``: once the far agent's output carries ``MARKER``, that chunk is held back, the
  agent stops reading its stdin (and creates the file ``stopped_reading``), and once the
  controller's writes to it block, the stdout stream gets more than its credit; then it exits;
- ``unopened``: once the far agent's output carries ``MARKER``, that chunk is held back and
  data goes to a stream the controller never opened;
- ``status``: the relay runs for real, then returns ``status`` (times ten to ``times_ten_to``)
  as the command's exit status;
- ``engine``: the host's container engine is ``engine``, after ``sleep`` seconds.

Standard library and the agent's own modules only; the script part never runs on the
controller.
"""

import os
import pickle
import sys
import threading
import time

# What the far agent's output carries when a test wants the hostile relay to act.
MARKER = "hostile-relay-acts-now"


def _agent():
    from chopsticks.agent import main
    return main.AGENT


def _send(request):
    """``request`` to the controller as a TUNNEL frame, msgpack as the codec packs it (so
    ints of any size and tuples go too); returns its request id."""
    from chopsticks.wire import codec, protocol
    agent = _agent()
    req_id = next(agent.ids)
    agent.send(protocol.TUNNEL, req_id, codec.encode(request))
    return req_id


def ask(request, timeout=10.0):
    """Send one crafted request and wait for its answer: ``[ok, type name, text]``, or
    ``["unanswered"]`` if none came within ``timeout``."""
    from chopsticks.wire import codec, protocol
    agent = _agent()
    try:
        reply = agent.request(protocol.TUNNEL, codec.encode(request), timeout=timeout)
    except ImportError:  # the agent's way of saying the controller did not answer
        return ["unanswered"]
    ok, value = pickle.loads(reply.payload)  # the controller's own pickle
    kind = type(value).__name__
    if isinstance(value, bytes):  # a call's result: its size says enough
        value = "%d bytes" % len(value)
    return [ok, kind, value if ok else str(value)]


def ask_each(requests, timeout=10.0):
    """``ask`` each request in turn; then this agent's child processes (what was started)."""
    answers = [ask(request, timeout) for request in requests]
    return {"answers": answers, "children": children()}


def ask_at_once(requests, timeout=20.0):
    """Send every request at once, from a thread each, and wait for all the answers."""
    answers = [None] * len(requests)

    def one(index):
        answers[index] = ask(requests[index], timeout)
    workers = [threading.Thread(target=one, args=(index,)) for index in range(len(requests))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def flood(requests, seconds=20.0):
    """Send every request without waiting for any answer, then wait for the controller to
    hang up (it must: this returns only if it did not)."""
    for request in requests:
        _send(request)
    time.sleep(seconds)
    return "the controller kept answering"


def open_and_flood(count, seconds=30.0):
    """Open a tunnel, then ask for ``count`` calls on it, each sleeping ``seconds``, at once."""
    opened = ask(["open", "Local", "sleepy", {}])
    if not opened[0]:
        return opened
    payload = pickle.dumps((time.sleep, (seconds,), {}), 4)
    return flood([["call", opened[2], payload, None, None]] * count, seconds)


def open_then(requests, options=None, timeout=10.0):
    """Open a Local tunnel with ``options`` (its id is 1: the first this remote opened), then
    ``ask_each``."""
    opened = ask(["open", "Local", "opened", options or {}], timeout)
    return dict(ask_each(requests, timeout), opened=opened)


def call_by_name(module, name, args):
    """A call's pickle naming ``module.name``, built by hand: this remote need not have it."""
    header = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
    return header + pickle.dumps(tuple(args), 2)[2:-1] + b"}\x87."


def from_nested(name, *args):
    """Open a tunnel with the original API (one level deeper) and run ``name(*args)`` of
    this module there: remote code at the next depth does the asking."""
    from chopsticks.tunnel import Local
    with Local("deeper") as tunnel:
        return [tunnel.call(getattr(sys.modules[__name__], name), *args), children()]


def children():
    """Process ids of this agent's children (what a relay started)."""
    kids = []
    for task in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/children" % task) as f:
            kids.extend(int(pid) for pid in f.read().split())
    return sorted(kids)


# -- the script: the real agent with a crafted relay -----------------------------------------

# Bytes unread in a pipe that mean its writer is blocked (Linux pipes hold 64 KiB; a writer
# blocks once what is left is less than it writes).
PIPE_FULL = 60 << 10


def _unread(fd):
    import fcntl
    import struct
    import termios
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _craft_relay(script):
    def craft(relay):
        from chopsticks.agent import main
        from chopsticks.wire import protocol
        how = script["relay"]
        real_copy, real_run = relay._Copy.copy, relay.run

        def act(stream):
            agent = main.AGENT
            if how == "unopened":
                agent.send(protocol.STREAM, 999, b"data for a stream never opened")
                return
            # Read no more of stdin (the reader stops at its next frame), say so, and wait
            # until the controller's writes to it block: then it can send no credit.
            agent.lock.acquire()
            with open(script["stopped_reading"], "w"):
                pass
            deadline = time.monotonic() + 20
            while _unread(agent.fd_in) < PIPE_FULL and time.monotonic() < deadline:
                time.sleep(0.01)
            # The whole window and two chunks more (the controller hands the credit of the
            # first to its blocked writer, and counts it), of bytes the far agent's decoder
            # takes for a message still arriving (so it is this tunnel, not the far one, that
            # breaks the rules); then exit, the controller reading it all in order.
            filler = protocol.encode(protocol.RESULT, 99999, b"\0" * (2 * protocol.STREAM_WINDOW))
            filler = b"".join(bytes(buf) for buf in filler)
            try:
                for start in range(0, protocol.STREAM_WINDOW + 2 * protocol.STREAM_CHUNK, protocol.STREAM_CHUNK):
                    agent.send(protocol.STREAM, stream.sid, filler[start:start + protocol.STREAM_CHUNK])
            finally:
                agent.exit(0)

        def copy(self):  # the real copy, until the marker goes by
            send = self.stream.send

            def send_or_act(data):
                if MARKER.encode() in data:
                    act(self.stream)
                    return True
                return send(data)
            self.stream.send = send_or_act
            real_copy(self)

        if how in ("overflow", "unopened"):
            relay._Copy.copy = copy
        elif how == "status":
            status = script["status"]
            if "times_ten_to" in script:  # JSON carries no such int
                status *= 10 ** script["times_ten_to"]
            relay.run = lambda *args: (real_run(*args), status)[1]
        elif how == "engine":
            relay.container_engine = lambda *args: (time.sleep(script.get("sleep", 0)), script["engine"])[1]
    return craft


if __name__ == "__main__":
    from crafted_agent import run_agent, script_and_command
    script, code, _ = script_and_command()
    run_agent(code, _craft_relay(script), "chopsticks.agent.relay")


def open_and_flood_bytes(count, size, seconds=30.0):
    """Open a tunnel, then ask for ``count`` calls on it at once, each sleeping ``seconds`` and
    carrying ``size`` bytes of arguments (held by the controller until the call returns)."""
    opened = ask(["open", "Local", "heavy", {}])
    if not opened[0]:
        return opened
    payload = pickle.dumps((time.sleep, (seconds,), {}), 4) + b"\x00" * size  # junk after the pickle's end
    return flood([["call", opened[2], payload, None, None]] * count, seconds)
