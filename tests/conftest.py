"""Shared fixtures: one Ray instance per test session (starting Ray costs seconds)."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def cluster():
    """An rlinf Cluster over embedded Ray with 4 virtual CPU devices, shared by the session."""
    from rlinf.config import ClusterConfig
    from rlinf.scheduler import Cluster

    c = Cluster(ClusterConfig(num_devices=4, ray_num_cpus=8, wait_timeout_s=120))
    yield c
    c.shutdown()


@pytest.fixture(scope="session")
def ray_session(cluster):
    """Ray, started once (through the session's Cluster)."""
    import ray

    return ray
