"""Controller side of a sync: wait on the source and target group calls together.

A sync is two concurrent group calls (actor ranks send, rollout ranks receive). Waiting on them one
after the other would hide a failure on the other side behind a timeout, and a target that dies
mid-sync first shows up as a "connection closed" error on the sources that were sending to it.
`wait_all` therefore watches every rank of every handle at once and, when one fails, gives Ray
`grace_s` to notice dead processes so that the error raised names the rank that died
(`WorkerDiedError`) rather than a peer that merely lost its connection.
"""

import logging
import time
from typing import Any, List, Optional, Sequence

import ray
from ray.exceptions import RayActorError, RayTaskError

from rlinf.scheduler import GroupHandle, WorkerDiedError, WorkerTimeoutError
from rlinf.scheduler.worker_group import translate_error

logger = logging.getLogger(__name__)


def wait_all(handles: Sequence[GroupHandle], timeout: Optional[float] = None, grace_s: float = 5.0) -> List[List[Any]]:
    """Per-handle results (as `GroupHandle.wait`) once every rank of every handle has finished.

    Raises the first failure, preferring `WorkerDiedError` for any rank found dead within `grace_s`
    of the first failure; raises `WorkerTimeoutError` past `timeout` (default: the handles' own)."""
    timeout = max(h._timeout for h in handles) if timeout is None else timeout
    owner = {ref: (h, i) for h in handles for i, ref in enumerate(h.refs)}
    pending = list(owner)
    deadline = time.monotonic() + timeout
    errors: List[Exception] = []
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, pending = ray.wait(pending, num_returns=1, timeout=min(left, 1.0))
        for ref in ready:
            h, i = owner[ref]
            try:
                ray.get(ref, timeout=0)
            except (RayTaskError, RayActorError) as e:
                errors.append(translate_error(e, h.group, h.ranks[i], h.method))
        if errors:
            deadline = min(deadline, time.monotonic() + grace_s)
            if any(isinstance(e, WorkerDiedError) for e in errors):
                break
    if errors:
        died = [e for e in errors if isinstance(e, WorkerDiedError)]
        logger.warning("sync failed: %s", "; ".join(str(e).splitlines()[0] for e in errors))
        raise (died or errors)[0]
    if pending:
        h, _ = owner[pending[0]]
        ranks = [owner[r][0].ranks[owner[r][1]] for r in pending if owner[r][0] is h]
        raise WorkerTimeoutError(h.group, ranks, h.method, timeout)
    return [h.wait(timeout=1.0) for h in handles]
