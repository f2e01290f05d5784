"""A Ray cluster of two nodes on this machine for tests/e2e/test_multinode.py, run in a process of its
own: Ray reads its authentication mode once per process, so the test process (whose mode is already
fixed) cannot start token-authenticated nodes itself.

Started with RAY_AUTH_MODE=token (as `RAY_AUTH_MODE=token ray start ...` starts nodes). Each node
declares one virtual rlinf device (resource `rlinf_devices`). Commands, one per stdin line: `remove`
(stop the joined node without a graceful shutdown), `add` (start a new node in its place), `quit`.
Every answer is one stdout line `CLUSTER {json}`.
"""

import json
import sys

from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
from ray.cluster_utils import Cluster

NODE = {"num_cpus": 1, "resources": {"rlinf_devices": 1}}


def _say(**fields) -> None:
    sys.stdout.write("CLUSTER " + json.dumps(fields) + "\n")
    sys.stdout.flush()


def main() -> None:
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE))
    try:
        worker = cluster.add_node(**NODE)
        cluster.wait_for_nodes(timeout=120)
        _say(address=cluster.address, head=cluster.head_node.node_id, worker=worker.node_id)
        for line in sys.stdin:
            command = line.strip()
            if command == "remove":
                cluster.remove_node(worker, allow_graceful=False)
                _say(removed=worker.node_id)
            elif command == "add":
                worker = cluster.add_node(**NODE)
                cluster.wait_for_nodes(timeout=120)
                _say(worker=worker.node_id)
            elif command == "quit":
                break
            else:
                _say(error=f"unknown command {command!r}")
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
