"""Cluster: start or join Ray, and map rlinf's device indices onto nodes.

Device i is a (node, local index) pair. With GPUs these are real GPUs, enumerated node by node in
Ray's node order; without GPUs, `num_devices` virtual CPU devices all live on the driver's node, so
every placement mode (and the gloo process groups behind it) runs on one CPU machine.
Workers are pinned to their device's node with a hard node-affinity strategy and ask Ray for no
CPU or GPU resources: rlinf does its own device accounting through the placement, and caps torch
threads per worker instead (`cluster.threads_per_worker`).
"""

import logging
import os
import socket
from dataclasses import dataclass
from typing import Dict, List

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rlinf.config.schema import ClusterConfig
from rlinf.errors import InputError

logger = logging.getLogger(__name__)

NAMESPACE = "rlinf"


@dataclass(frozen=True)
class Device:
    """One device slot: global index, the Ray node that holds it, its index on that node, and kind."""

    index: int
    node_id: str
    node_ip: str
    local_index: int
    kind: str  # "cuda" or "cpu"


class Cluster:
    """Owns the Ray connection and the device table for one run."""

    def __init__(self, cfg: ClusterConfig):
        self.cfg = cfg
        self._started_ray = False
        if not ray.is_initialized():
            self._init_ray()
        self.devices: List[Device] = self._enumerate_devices()
        self.device_type = self.devices[0].kind
        logger.info("cluster: %d %s device(s)", len(self.devices), self.device_type)

    def _init_ray(self) -> None:
        cfg = self.cfg
        kwargs = dict(namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=True)
        if cfg.address:
            _check_reachable(cfg.address)
            try:
                ray.init(address=cfg.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise InputError(f"cannot reach Ray cluster at '{cfg.address}': {e}", key="cluster.address") from None
        else:
            # Ray 2.60's gRPC services listen on every interface whatever the node IP; its default
            # token authentication guards them. The dashboard (off by default) binds to `host`.
            # Thread caps are not set here: this process imported torch long ago (too late for
            # OMP_NUM_THREADS) and its environment is the caller's. Each worker gets them in its own
            # environment before torch starts (`actor_options`); other Ray actors default to 1.
            ray.init(
                num_cpus=cfg.ray_num_cpus,
                include_dashboard=cfg.dashboard,
                dashboard_host=cfg.host,
                **kwargs,
            )
        self._started_ray = True

    def _enumerate_devices(self) -> List[Device]:
        cfg = self.cfg
        want_cuda = cfg.device_type == "cuda" or (cfg.device_type == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        if want_cuda:
            devices: List[Device] = []
            for node in sorted(ray.nodes(), key=lambda n: n["NodeManagerAddress"]):
                if not node.get("Alive"):
                    continue
                for local in range(int(node["Resources"].get("GPU", 0))):
                    devices.append(Device(len(devices), node["NodeID"], node["NodeManagerAddress"], local, "cuda"))
            if len(devices) < cfg.num_devices:
                raise InputError(
                    f"{cfg.num_devices} devices requested but the Ray cluster has {len(devices)} GPU(s)",
                    key="cluster.num_devices",
                )
            return devices[: cfg.num_devices]
        node_id = ray.get_runtime_context().get_node_id()
        node_ip = ray.util.get_node_ip_address()
        return [Device(i, node_id, node_ip, i, "cpu") for i in range(cfg.num_devices)]

    def device(self, index: int) -> Device:
        return self.devices[index]

    def actor_options(self, index: int, name: str, env: Dict[str, str]) -> dict:
        """Ray actor options that pin a worker to device `index` with `env` set before it starts."""
        dev = self.devices[index]
        env = dict(env)
        env.setdefault("OMP_NUM_THREADS", str(self.cfg.threads_per_worker))
        env.setdefault("MKL_NUM_THREADS", str(self.cfg.threads_per_worker))
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if dev.kind == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = str(dev.local_index)
            env["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] = "1"
        return dict(
            name=name,
            namespace=NAMESPACE,
            num_cpus=0,
            num_gpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=dev.node_id, soft=False),
            runtime_env={"env_vars": env},
            max_restarts=0,
        )

    @property
    def backend(self) -> str:
        """torch.distributed backend for groups on this cluster."""
        return "nccl" if self.device_type == "cuda" else "gloo"

    def shutdown(self) -> None:
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an address nothing listens at (ray.init itself retries for minutes)."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError("expected host:port, ray://host:port or auto", key="cluster.address")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise InputError(f"cannot reach Ray cluster at '{address}': {e}", key="cluster.address") from None
