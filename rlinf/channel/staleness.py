"""Admission control that bounds how stale (in weight versions) a consumed sample can be."""

import threading
from typing import Dict, Optional


class StalenessManager:
    """Counts admitted, in-flight, ready and consumed samples per weight version.

    With B = samples consumed per training step (`batch_size`) and s = `max_staleness`:

    * Admission: a producer holding weights of version v may admit (start) a sample only while
      ``admitted < (v + s + 1) * B``, where `admitted` counts admissions not cancelled.
    * Consumer version: ``c = consumed // B`` (one weight version per consumed batch).
    * Delivery: a ready sample may be delivered only if its version is the minimum version among
      all admitted-but-not-consumed samples (in flight or ready); FIFO by arrival within a version.
    * Staleness of a delivered sample = c at delivery (before counting it) - its version.

    Bound (staleness <= s; s = 0 is fully synchronous). Let x of version v be delivered after the
    set P of samples. Every y in P has version <= v (version-ordered delivery) unless it was
    delivered before x was admitted. Take z, the last admitted of P + {x}: z is x or was admitted
    after x, so version(z) <= v, and when z was admitted all of P + {x} but z were admitted and
    never cancelled (they get consumed). So |P| <= admitted-before-z < (v + s + 1) * B, i.e.
    x is consumed at consumer version |P| // B <= v + s. Cancellation keeps the argument: it only
    lowers the count that later admissions are checked against, for samples never consumed.

    Thread-safe (one `threading.Lock`); knows nothing of Ray.
    """

    def __init__(self, batch_size: int, max_staleness: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.batch_size = batch_size
        self.max_staleness = max_staleness
        self._lock = threading.Lock()
        self._admitted = 0  # admissions minus cancellations (consumed samples stay counted)
        self._consumed = 0
        self._in_flight: Dict[int, int] = {}  # version -> admitted, not yet put
        self._ready: Dict[int, int] = {}  # version -> put, not yet consumed
        self._max_staleness_seen: Optional[int] = None

    # ---- producer side --------------------------------------------------------------------------
    def admission_limit(self, version: int) -> int:
        """Total admissions allowed for a producer of `version`: (version + s + 1) * B."""
        return (version + self.max_staleness + 1) * self.batch_size

    def try_admit(self, version: int, n: int = 1) -> bool:
        """Admit `n` samples of `version` (all or none). True if admitted."""
        _check_count(n)
        with self._lock:
            if self._admitted + n > self.admission_limit(version):
                return False
            self._admitted += n
            self._in_flight[version] = self._in_flight.get(version, 0) + n
            return True

    def cancel(self, version: int, n: int = 1) -> None:
        """Give back `n` admitted, not yet put samples of `version` (e.g. a failed producer)."""
        _check_count(n)
        with self._lock:
            self._take(self._in_flight, version, n, "cancel")
            self._admitted -= n

    def on_put(self, version: int, n: int = 1) -> None:
        """`n` admitted samples of `version` are now ready. ValueError if they were not admitted."""
        _check_count(n)
        with self._lock:
            self._take(self._in_flight, version, n, "put")
            self._ready[version] = self._ready.get(version, 0) + n

    def drop_in_flight(self) -> int:
        """Forget every in-flight admission (their producers will never put); returns how many."""
        return self._forget(self._in_flight)

    def drop_ready(self) -> int:
        """Forget every ready sample (the channel discards them unconsumed); returns how many."""
        return self._forget(self._ready)

    def _forget(self, counts: Dict[int, int]) -> int:
        with self._lock:
            dropped = sum(counts.values())
            counts.clear()
            self._admitted -= dropped
            return dropped

    # ---- consumer side --------------------------------------------------------------------------
    def deliverable_version(self) -> Optional[int]:
        """Version of the next sample that may be delivered, or None if none may be now."""
        with self._lock:
            return self._deliverable_version()

    def deliverable_count(self) -> int:
        """How many ready samples could be delivered one after another right now."""
        with self._lock:
            count = 0
            for version in sorted(set(self._ready) | set(self._in_flight)):
                count += self._ready.get(version, 0)
                if self._in_flight.get(version, 0):
                    break
            return count

    def on_consume(self, version: int) -> int:
        """Record delivery of one ready sample of `version`; returns its staleness."""
        with self._lock:
            if version != self._deliverable_version():
                raise ValueError(f"a sample of version {version} is not deliverable now "
                                 f"(deliverable: {self._deliverable_version()})")
            self._take(self._ready, version, 1, "consume")
            staleness = self._consumed // self.batch_size - version
            self._consumed += 1
            if self._max_staleness_seen is None or staleness > self._max_staleness_seen:
                self._max_staleness_seen = staleness
            return staleness

    def on_restore(self, version: int) -> None:
        """Undo `on_consume` of one sample of `version` whose delivery never reached its consumer
        (it is ready again and counts as not consumed)."""
        with self._lock:
            if self._consumed < 1:
                raise ValueError("restore without a consumed sample")
            self._ready[version] = self._ready.get(version, 0) + 1
            self._consumed -= 1

    # ---- counters -------------------------------------------------------------------------------
    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def consumed(self) -> int:
        return self._consumed

    @property
    def consumer_version(self) -> int:
        return self._consumed // self.batch_size

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    @property
    def ready(self) -> int:
        with self._lock:
            return sum(self._ready.values())

    @property
    def max_staleness_seen(self) -> Optional[int]:
        """Largest staleness delivered so far (None before the first delivery)."""
        return self._max_staleness_seen

    def in_flight_of(self, version: int) -> int:
        """Admitted, not yet put samples of `version`."""
        with self._lock:
            return self._in_flight.get(version, 0)

    def oldest_in_flight_version(self) -> Optional[int]:
        with self._lock:
            return min(self._in_flight) if self._in_flight else None

    # ---- internals (lock held) ------------------------------------------------------------------
    def _deliverable_version(self) -> Optional[int]:
        outstanding = set(self._ready) | set(self._in_flight)
        if not outstanding:
            return None
        oldest = min(outstanding)
        return oldest if self._ready.get(oldest, 0) else None

    @staticmethod
    def _take(counts: Dict[int, int], version: int, n: int, what: str) -> None:
        have = counts.get(version, 0)
        if have < n:
            raise ValueError(f"cannot {what} {n} sample(s) of version {version}: only {have} "
                             f"{'admitted and in flight' if what != 'consume' else 'ready'}")
        if have == n:
            del counts[version]
        else:
            counts[version] = have - n


def _check_count(n: int) -> None:
    if n < 1:
        raise ValueError(f"sample count must be >= 1, got {n}")
