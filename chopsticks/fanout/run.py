"""One run of the command over its hosts: rolling batches, each host's record as it comes,
what was left undone, and the exit status. CLI layer.

``--batch N|P%`` runs the hosts in successive batches of that size, in the given order, as
Ansible's ``serial``; ``--max-fail N|P%`` starts no new batch once that many hosts have not
succeeded (failed, timed out or unreachable), as its ``max_fail_percentage``; the hosts of
the batches not started are reported as ``not started``. Ctrl-C stops the run and reports each
host still under way as ``interrupted``, by name. While a batch's last few hosts are still
running, the progress bar names them.
"""

import dataclasses
import math
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from chopsticks.fanout.output import (
    FAILED, INTERRUPTED, NOT_STARTED, OK, STATUSES, TIMED_OUT, UNREACHABLE, record,
)

# Exit statuses (documented in the README and the command's help).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_BOTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
# Hosts still running that the progress bar names.
PENDING_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Share:
    """``N`` hosts, or ``P%`` of them (``--batch``, ``--max-fail``)."""

    count: Optional[int] = None
    percent: Optional[float] = None

    def of(self, hosts: int) -> int:
        """How many of ``hosts`` that is, at least 1."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return max(1, math.ceil(hosts * self.percent / 100))


def parse_share(text: str) -> Share:
    """``'10'`` or ``'25%'``; ValueError saying what is wrong."""
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError("%r is not a percentage such as 25%%" % text) from None
        if not 0 < percent <= 100:
            raise ValueError("a percentage must be more than 0%% and at most 100%%, got %s" % text)
        return Share(percent=percent)
    try:
        count = int(text)
    except ValueError:
        raise ValueError("%r is not a number of hosts or a percentage such as 25%%" % text) from None
    if count < 1:
        raise ValueError("must be at least 1 host, got %s" % text)
    return Share(count=count)


def batches(hosts: List[str], size: Optional[Share]) -> List[List[str]]:
    """The hosts in successive batches (one batch of all without ``--batch``)."""
    if size is None or not hosts:
        return [hosts]
    step = size.of(len(hosts))
    return [hosts[start:start + step] for start in range(0, len(hosts), step)]


def exit_status(counts: Dict[str, int], interrupted: bool) -> int:
    """0 every host succeeded; 1 some failed, timed out or were not started; 3 some were
    unreachable; 4 both; 130 interrupted."""
    if interrupted:
        return EXIT_INTERRUPTED
    unreachable = counts.get(UNREACHABLE, 0) > 0
    failed = any(counts.get(status, 0) for status in (FAILED, TIMED_OUT, NOT_STARTED))
    return EXIT_BOTH if unreachable and failed else EXIT_UNREACHABLE if unreachable else \
        EXIT_FAILED if failed else EXIT_OK


class Run:
    """The records of one run, as the hosts finish. ``start(hosts, seconds_left)`` is the
    job's fan-out over those hosts (``(host, value)`` as each finishes); ``emit(record, value,
    finished)`` is called with each host's record as it comes, those of hosts left undone
    included (``finished`` False, value None)."""

    def __init__(self, hosts: List[str], judge: Callable[[Any], str], bar: Any, count_bytes: bool,
                 emit: Callable[[Dict[str, Any], Any, bool], None]):
        self.hosts = hosts
        self.judge = judge
        self.bar = bar
        self.count_bytes = count_bytes
        self.emit = emit
        self.counts: Dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.done: Dict[str, str] = {}  # host -> status, in the order they finished
        self.interrupted = False

    def go(self, start: Callable[[List[str], Optional[float]], Iterator[Tuple[str, Any]]],
           size: Optional[Share], max_fail: Optional[Share], deadline: Optional[float]) -> None:
        """Run every batch in turn (KeyboardInterrupt: the rest is ``interrupted``)."""
        started = time.monotonic()
        limit = None if max_fail is None else max_fail.of(len(self.hosts))
        try:
            for index, batch in enumerate(batches(self.hosts, size)):
                if limit is not None and len(self.done) - self.counts[OK] >= limit:
                    break
                left = deadline if deadline is None or not index else deadline - (time.monotonic() - started)
                if left is not None and left <= 0:
                    break  # what is left is not started: the run's time is up
                self._batch(batch, start(batch, left))
        except KeyboardInterrupt:
            self.interrupted = True
        for host in self.hosts:
            if host not in self.done:
                self._add({"host": host, "status": INTERRUPTED if self.interrupted else NOT_STARTED}, None, False)

    def _batch(self, batch: List[str], results: Iterator[Tuple[str, Any]]) -> None:
        pending = dict.fromkeys(batch)
        try:
            for host, value in results:
                pending.pop(host, None)
                self._add(record(host, value, self.judge), value, True)
                self._show_progress(pending)
        finally:
            getattr(results, "close", lambda: None)()  # stop the fan-out: its pool and greenlets

    def _add(self, entry: Dict[str, Any], value: Any, finished: bool) -> None:
        self.done[entry["host"]] = entry["status"]
        self.counts[entry["status"]] += 1
        self.emit(entry, value, finished)

    def _show_progress(self, pending: Dict[str, None]) -> None:
        counts = self.counts
        text = "%d ok, %d failed, %d timed out" % (counts[OK], counts[FAILED], counts[TIMED_OUT])
        if counts[UNREACHABLE]:
            text += ", %d unreachable" % counts[UNREACHABLE]
        if self.count_bytes:
            text = "%d/%d hosts: %s" % (len(self.done), len(self.hosts), text)
        if 0 < len(pending) <= PENDING_SHOWN:
            text += "; waiting for " + ", ".join(pending)
        self.bar.set_postfix_str(text, refresh=False)
        if not self.count_bytes:
            self.bar.update(1)

    def not_ok(self) -> List[str]:
        """The hosts that did not succeed, in the run's order (for ``--failed-to``)."""
        return [host for host in self.hosts if self.done.get(host) != OK]
