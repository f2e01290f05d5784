"""GPU test fixtures: one Cluster over every visible GPU for the session (built only by a test that
runs, i.e. on a CUDA host)."""

import pytest

from tests.gpu.gpu_workers import gpus


@pytest.fixture(scope="session")
def gpu_cluster():
    from rlinf.config import ClusterConfig
    from rlinf.scheduler import Cluster

    c = Cluster(ClusterConfig(num_devices=gpus(), device_type="cuda", wait_timeout_s=300))
    yield c
    c.shutdown()
