"""The channel's queue logic without Ray or asyncio: ordering, capacity, admission, statistics.

`ChannelCore` only answers "may this happen now?" and performs the change; the Ray actor in
`channel.py` does the waiting. Keeping the two apart lets the rules be tested without Ray.

No item vanishes silently. Every item offered to `put` is, at any moment, exactly one of: queued,
consumed (delivered by `get`/`take`, minus those handed back by `restore`), or dropped and counted
under a reason in `dropped` with a log line:

    produced == consumed + qsize + sum(dropped.values())

Reasons: `put_after_close` (a put refused because the channel was closed; the producer also gets
ChannelClosed) and whatever reason `discard` is called with (e.g. `unconsumed_at_stop`).
"""

import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Hashable, List, Optional

from rlinf.channel.staleness import StalenessManager
from rlinf.errors import RunFailure

logger = logging.getLogger(__name__)


class ChannelClosed(RunFailure):
    """The channel is closed: no more puts; gets fail once the queue is drained."""


class ChannelGone(ChannelClosed):
    """The channel actor is gone (destroyed or dead): nothing the call carried was counted."""


class ChannelTimeout(TimeoutError, RunFailure):
    """A channel operation did not complete within its timeout."""


@dataclass
class Envelope:
    """One item with its metadata.

    `version` is the weight version that produced the item; `seq` numbers the items of one
    `producer` in arrival order; `staleness` (consumer version at delivery - version) and
    `delivered_index` (position in the channel's global delivery order) are set on delivery.
    """

    item: Any
    version: int = 0
    producer: Optional[Hashable] = None
    seq: int = 0
    staleness: int = 0
    delivered_index: int = -1


class ChannelCore:
    """Queue state of one channel.

    Without staleness control (`max_staleness=None`) delivery is FIFO by arrival and admission is
    a no-op. With it, every put must have been admitted by `try_admit`, and delivery follows
    `StalenessManager`: oldest version first, FIFO within a version. FIFO per producer holds in
    both modes as long as each producer's versions never decrease.

    Capacity (`capacity` > 0) bounds queued items; a put waits for room, except that
    * a batch larger than the capacity goes in when the queue is empty, and
    * with staleness control, items of the oldest in-flight version are always let in: consumers
      may be waiting for exactly them, so holding them back could deadlock. The queue can then
      exceed capacity by at most the number of such items.
    After `close`, in-flight admissions are dropped, puts are refused (counted as dropped,
    `put_after_close`) and what is queued can still be drained: a get then hands out what is left,
    a short batch if fewer than asked remain (counted in `short_gets`), and ChannelClosed once empty.
    """

    def __init__(self, capacity: int = 0, max_staleness: Optional[int] = None, batch_size: int = 1):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0 (0 = unbounded), got {capacity}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_staleness = max_staleness
        self.staleness = None if max_staleness is None else StalenessManager(batch_size, max_staleness)
        self.closed = False
        self._fifo: Deque[Envelope] = deque()  # without staleness control
        self._by_version: Dict[int, Deque[Envelope]] = {}  # with staleness control
        self._size = 0
        self._next_seq: Dict[Hashable, int] = {}
        self._produced = 0  # items offered to put: accepted or refused (and counted as dropped)
        self._puts = 0  # items accepted into the queue
        self._gets = 0  # items consumed (restored ones are not)
        self._next_index = 0  # delivery order; never reused, even for a restored item
        self._dropped: Counter = Counter()
        self._short_gets = 0
        self._restored = 0
        self._histogram: Counter = Counter()

    # ---- admission ------------------------------------------------------------------------------
    def try_admit(self, version: int, n: int = 1) -> bool:
        return True if self.staleness is None else self.staleness.try_admit(version, n)

    def cancel(self, version: int, n: int = 1) -> None:
        if self.staleness is not None:
            self.staleness.cancel(version, n)

    # ---- put ------------------------------------------------------------------------------------
    def check_put(self, version: int, n: int) -> None:
        """ValueError unless `n` items of `version` may be put (they must have been admitted).
        On a closed channel there is nothing to check: `put` refuses and counts the items."""
        if n < 1:
            raise ValueError("put needs at least one item")
        if self.closed:
            return
        if self.staleness is not None and self.staleness.in_flight_of(version) < n:
            raise ValueError(f"put of {n} item(s) of version {version} without admission: with "
                             f"max_staleness set, call admit(version, n) before put "
                             f"({self.staleness.in_flight_of(version)} admitted and in flight)")

    def has_room(self, version: int, n: int) -> bool:
        if self.closed or self.capacity == 0 or self._size == 0 or self._size + n <= self.capacity:
            return True  # closed: `put` answers at once (it refuses)
        return self.staleness is not None and self.staleness.oldest_in_flight_version() == version

    def put(self, items: List[Any], version: int, producer: Optional[Hashable] = None) -> None:
        """Queue `items`. On a closed channel they are refused: counted as dropped
        (`put_after_close`), logged, and ChannelClosed is raised."""
        if self.closed:
            if items:
                self._produced += len(items)
                self._drop("put_after_close", len(items), f"version {version} from producer {producer!r}")
            raise ChannelClosed("put on a closed channel")
        self.check_put(version, len(items))
        if self.staleness is not None:
            self.staleness.on_put(version, len(items))
        seq = self._next_seq.get(producer, 0)
        self._next_seq[producer] = seq + len(items)
        envelopes = [Envelope(item, version, producer, seq + i) for i, item in enumerate(items)]
        if self.staleness is None:
            self._fifo.extend(envelopes)
        else:
            self._by_version.setdefault(version, deque()).extend(envelopes)
        self._size += len(items)
        self._puts += len(items)
        self._produced += len(items)

    # ---- get ------------------------------------------------------------------------------------
    def available(self) -> int:
        """How many items `take` could hand out now."""
        if self.staleness is None:
            return self._size
        return self.staleness.deliverable_count()

    def get(self, n: int) -> Optional[List[Envelope]]:
        """The next `n` items if they are deliverable now; None if the caller must wait. On a closed
        channel: what is left (a short batch is counted in `short_gets` and logged), or
        ChannelClosed when nothing is left."""
        if self.available() >= n:
            return self.take(n)
        if not self.closed:
            return None
        left = self.available()
        if not left:
            raise ChannelClosed("get on a closed, drained channel")
        self._short_gets += 1
        logger.warning("channel closed: a get of %d item(s) returns the last %d", n, left)
        return self.take(left)

    def take(self, n: int) -> List[Envelope]:
        """Remove and return the next `n` items; the caller checked `available() >= n`."""
        taken = []
        for _ in range(n):
            if self.staleness is None:
                env = self._fifo.popleft()
                env.staleness = self._gets // self.batch_size - env.version
            else:
                version = self.staleness.deliverable_version()
                queue = self._by_version[version]
                env = queue.popleft()
                if not queue:
                    del self._by_version[version]
                env.staleness = self.staleness.on_consume(version)
            env.delivered_index = self._next_index
            self._next_index += 1
            self._gets += 1
            self._size -= 1
            self._histogram[env.staleness] += 1
            taken.append(env)
        return taken

    def restore(self, envelopes: List[Envelope]) -> None:
        """Put back items that `take` handed out but that never reached their consumer (e.g. its
        call was cancelled as the answer arrived): at the head of the queue, in their order, no
        longer counted as consumed. They are delivered again next (with a new `delivered_index`).
        Works on a closed channel too (they can still be drained)."""
        for env in reversed(envelopes):
            self._histogram[env.staleness] -= 1
            if not self._histogram[env.staleness]:
                del self._histogram[env.staleness]
            if self.staleness is None:
                self._fifo.appendleft(env)
            else:
                self.staleness.on_restore(env.version)
                self._by_version.setdefault(env.version, deque()).appendleft(env)
            self._gets -= 1
            self._size += 1
            self._restored += 1

    def discard(self, reason: str) -> int:
        """Close and drop everything queued, counted as dropped under `reason` (with a log line);
        returns how many items were dropped."""
        self.close()
        n = self._size
        if n:
            self._fifo.clear()
            self._by_version.clear()
            if self.staleness is not None:
                self.staleness.drop_ready()
            self._size = 0
            self._drop(reason, n, "queued")
        return n

    def _drop(self, reason: str, n: int, what: str) -> None:
        self._dropped[reason] += n
        logger.warning("channel: dropped %d item(s) (%s): %s; dropped so far %s", n, reason, what,
                       dict(self._dropped))

    # ---- lifecycle and counters -----------------------------------------------------------------
    def close(self) -> None:
        if not self.closed and self.staleness is not None:
            self.staleness.drop_in_flight()
        self.closed = True

    def qsize(self) -> int:
        return self._size

    @property
    def consumed(self) -> int:
        return self._gets

    @property
    def produced(self) -> int:
        return self._produced

    @property
    def dropped(self) -> Dict[str, int]:
        """{reason: items dropped}; see the module docstring for the reasons."""
        return dict(self._dropped)

    def consumer_version(self) -> int:
        return self._gets // self.batch_size

    def stats(self) -> Dict[str, Any]:
        hist = dict(sorted(self._histogram.items()))
        return {
            "produced": self._produced,
            "consumed": self._gets,
            "dropped": dict(self._dropped),
            "short_gets": self._short_gets,
            "restored": self._restored,
            "puts": self._puts,
            "gets": self._gets,
            "qsize": self._size,
            "capacity": self.capacity,
            "closed": self.closed,
            "batch_size": self.batch_size,
            "max_staleness": self.max_staleness,
            "consumer_version": self.consumer_version(),
            "in_flight": 0 if self.staleness is None else self.staleness.in_flight,
            "admitted": None if self.staleness is None else self.staleness.admitted,
            "max_staleness_seen": max(hist) if hist else None,
            "staleness_histogram": hist,
        }
