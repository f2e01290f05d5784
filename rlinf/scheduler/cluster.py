"""Cluster: start or join Ray, and map rlinf's device indices onto nodes.

Device i is a (node, local index) pair, enumerated node by node: the head node first, then the others
by address (`devices_from_nodes`). With GPUs these are real GPUs. Without GPUs they are virtual CPU devices:
on a Ray cluster whose nodes declare the custom resource `rlinf_devices` (`ray start ...
--resources='{"rlinf_devices": 2}'`), node by node as declared, so groups and their gloo process
groups span nodes; otherwise `num_devices` virtual devices on the driver's node, so every placement
mode runs on one CPU machine.
Workers are pinned to their device's node with a hard node-affinity strategy and ask Ray for no
CPU or GPU resources: rlinf does its own device accounting through the placement, and caps torch
threads per worker instead (`cluster.threads_per_worker`).

A Cluster is the controller's side of one run (see docs/security.md):
- files: it picks the run's file prefix (`run_prefix`, handed to every worker as RLINF_RUN_PREFIX) and
  removes every shared-memory arena and temp file carrying it in `shutdown()` (normal end, failure,
  before a restart: `Runner.close` calls it), at interpreter exit (atexit; Ray's SIGTERM handler exits
  through it), and for one killed group through `release_group_files`; files of a controller that was
  itself SIGKILLed are swept by the next one (`rlinf.utils.runfiles`).
- sockets: workers bind their torch.distributed stores and gloo/NCCL sockets to 127.0.0.1 on a
  single-node cluster (RLINF_BIND_HOST; the node IP only when the cluster spans nodes).
- Ray's own services listen on every interface whatever the node IP; its token authentication guards
  them, and the Cluster refuses to run without it unless `cluster.ray_token_auth` is false.
- waits: workers read the run's bound on a single wait from RLINF_WAIT_TIMEOUT_S.
- nodes: a node of a multi-node run that leaves the Ray cluster stops the run naming it
  (`lost_nodes`, `NodeLostError`); it is not restarted around, since its devices are gone.
"""

import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rlinf.config.schema import ClusterConfig
from rlinf.errors import InputError, RunFailure
from rlinf.utils.runfiles import ENV as RUN_PREFIX_ENV
from rlinf.utils.runfiles import RunFiles, sweep_stale

logger = logging.getLogger(__name__)

NAMESPACE = "rlinf"
LOOPBACK = "127.0.0.1"
# Custom Ray resource by which a node of a CPU cluster declares how many virtual devices it holds.
DEVICE_RESOURCE = "rlinf_devices"
# How long a node may take to answer before it counts as lost (Ray itself marks a node dead after
# missing ~5 health checks, 15-20 s on this machine).
NODE_PROBE_TIMEOUT_S = 30.0


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

    def __init__(self, cfg: ClusterConfig, workers: int = 0, while_starting: Optional[Callable[[], None]] = None):
        """`workers`: how many worker processes the run will start. A Ray started here starts that many
        ahead of time (while the controller still imports and builds its workflow), as its logical CPU
        count unless `cluster.ray_num_cpus` sets one: rlinf's actors and tasks ask for no CPUs, so the
        count only sizes that pool (Ray's own default would follow the machine's cores).
        `while_starting`: work for a second thread while Ray starts (the controller's imports: Ray's start
        is mostly waiting). It runs inside the worker environment a Ray started here is given (thread
        caps included: torch imported there runs with `cluster.threads_per_worker` threads), so this
        process's environment never changes while another thread reads it; it is joined, within
        `cluster.wait_timeout_s`, before the environment is put back."""
        self.cfg = cfg
        self.workers = workers
        self._started_ray = False
        self._inherited_env: Dict[str, str] = {}  # what every worker process of the Ray started here has
        sweep_stale()  # files of controllers that were killed before they could clean up
        self.files = RunFiles()  # this run's files; removed in shutdown() and at exit
        self.run_prefix = self.files.prefix
        try:
            if not ray.is_initialized():
                self._init_ray(while_starting)
            elif while_starting is not None:
                while_starting()
            check_token_auth(cfg.ray_token_auth)
        except BaseException:
            self.shutdown()
            raise
        self.devices: List[Device] = self._enumerate_devices()
        self.device_type = self.devices[0].kind
        self.single_node = len({d.node_id for d in self.devices}) == 1
        logger.info("cluster: %d %s device(s)", len(self.devices), self.device_type)

    def _init_ray(self, while_starting: Optional[Callable[[], None]] = None) -> None:
        cfg = self.cfg
        if cfg.ray_token_auth and os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
            raise InputError(f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']} turns off Ray's token authentication; "
                             "Ray's services listen on every interface and the token is what guards them. Unset it, "
                             "or set cluster.ray_token_auth=false to run without it", key="cluster.ray_token_auth")
        kwargs = dict(namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=True)
        if cfg.address:
            _check_reachable(cfg.address)
            if cfg.ray_token_auth and "RAY_AUTH_MODE" not in os.environ:
                # Ray turns token authentication on by itself only for a cluster it starts or finds on its
                # own; joining a named address it stays off unless the environment says so.
                raise InputError("joining a Ray cluster needs RAY_AUTH_MODE=token in the environment (and the "
                                 "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN), as its nodes were started "
                                 "with; or set cluster.ray_token_auth=false", key="cluster.address")
            try:
                with _alongside(while_starting, cfg.wait_timeout_s):
                    ray.init(address=cfg.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise InputError(f"cannot reach Ray cluster at '{cfg.address}': {e}", key="cluster.address") from None
        else:
            # Ray 2.60's gRPC services listen on every interface whatever the node IP; its default
            # token authentication guards them. The dashboard (off by default) binds to `host`.
            # Ray's processes take this process's environment when they start, and its worker processes
            # theirs: with the run's worker environment in place while Ray starts, every worker (and
            # every process Ray starts ahead of time) has it before torch loads, and actors need no
            # runtime environment of their own (`actor_options`). This process's environment is the
            # caller's again afterwards.
            run_env = self._run_env(LOOPBACK)  # one node: Ray started here is this machine's alone
            num_cpus = cfg.ray_num_cpus if cfg.ray_num_cpus is not None else (self.workers or None)
            with _environment(run_env), _alongside(while_starting, cfg.wait_timeout_s):
                ray.init(
                    address="local",  # a Ray of its own, never one found on this machine (`ray start`, RAY_ADDRESS)
                    num_cpus=num_cpus,
                    include_dashboard=cfg.dashboard,
                    dashboard_host=cfg.host,
                    **kwargs,
                )
            self._inherited_env = run_env
        self._started_ray = True

    def _enumerate_devices(self) -> List[Device]:
        cfg = self.cfg
        nodes = ray.nodes()
        want_cuda = cfg.device_type == "cuda" or (cfg.device_type == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        if want_cuda or any(n.get("Alive") and n["Resources"].get(DEVICE_RESOURCE, 0) > 0 for n in nodes):
            devices = devices_from_nodes(nodes, "GPU" if want_cuda else DEVICE_RESOURCE, "cuda" if want_cuda else "cpu")
            if len(devices) < cfg.num_devices:
                what = "GPU(s)" if want_cuda else f"virtual device(s) (resource '{DEVICE_RESOURCE}' of its nodes)"
                raise InputError(f"{cfg.num_devices} devices requested but the Ray cluster has {len(devices)} {what}",
                                 key="cluster.num_devices")
            return devices[: cfg.num_devices]
        node_id = ray.get_runtime_context().get_node_id()
        node_ip = ray.util.get_node_ip_address()
        return [Device(i, node_id, node_ip, i, "cpu") for i in range(cfg.num_devices)]

    def describe(self) -> List[dict]:
        """The device table: index, kind, node id and address of every device of the run."""
        return [{"device": d.index, "kind": d.kind, "node_id": d.node_id, "node_ip": d.node_ip,
                 "local_index": d.local_index} for d in self.devices]

    def lost_nodes(self, timeout_s: float = NODE_PROBE_TIMEOUT_S) -> List[Device]:
        """One device of each node of this run that is gone: marked dead by Ray, or not answering a
        probe within `timeout_s` (Ray marks a node dead only after missed health checks, so a node
        whose processes just died still counts as alive for a while; the probe waits that out)."""
        nodes = {d.node_id: d for d in self.devices}
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        lost = [d for node_id, d in nodes.items() if node_id not in alive]
        probes = {_probe_node.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=node_id, soft=False)).remote(): d for node_id, d in nodes.items() if node_id in alive}
        if not probes:
            return sorted(lost, key=lambda d: d.index)
        ready, missing = ray.wait(list(probes), num_returns=len(probes), timeout=timeout_s)
        for ref in ready:
            try:
                ray.get(ref, timeout=timeout_s)
            except ray.exceptions.RayError:
                lost.append(probes[ref])
        for ref in missing:
            ray.cancel(ref, force=True)
            lost.append(probes[ref])
        return sorted(lost, key=lambda d: d.index)

    def device(self, index: int) -> Device:
        return self.devices[index]

    def worker_env(self, index: int) -> Dict[str, str]:
        """The environment a worker on device `index` runs with (its identity aside, see `rank_class`):
        thread caps, the run's file prefix and wait bound, the address its sockets bind to, its GPU."""
        dev = self.devices[index]
        # listening sockets (stores, gloo pairs): loopback unless ranks on other nodes must reach them
        env = self._run_env(LOOPBACK if self.single_node else dev.node_ip)
        if dev.kind == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = str(dev.local_index)
            env["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] = "1"
        return env

    def _run_env(self, bind_host: str) -> Dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.cfg.threads_per_worker), "MKL_NUM_THREADS": str(self.cfg.threads_per_worker),
                "OMP_WAIT_POLICY": "PASSIVE", RUN_PREFIX_ENV: self.run_prefix,
                "RLINF_WAIT_TIMEOUT_S": str(self.cfg.wait_timeout_s), "RLINF_BIND_HOST": bind_host}

    def actor_options(self, index: int, name: str) -> dict:
        """Ray actor options that pin a worker to device `index`, with `worker_env(index)` set before it starts.

        What the worker processes of a Ray this Cluster started already have (`_inherited_env`, set when
        Ray started) is not repeated: with nothing left to set (CPU devices), the actor has no runtime
        environment of its own and takes one of the processes Ray started ahead of time instead of a
        new one."""
        env = {k: v for k, v in self.worker_env(index).items() if self._inherited_env.get(k) != v}
        options = dict(
            name=name,
            namespace=NAMESPACE,
            num_cpus=0,
            num_gpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=self.devices[index].node_id, soft=False),
            max_restarts=0,
        )
        if env:
            options["runtime_env"] = {"env_vars": env}
        return options

    @property
    def backend(self) -> str:
        """torch.distributed backend for groups on this cluster."""
        return "nccl" if self.device_type == "cuda" else "gloo"

    def release_group_files(self, group: str) -> int:
        """Remove the files the ranks of `group` made (call once the group is stopped or killed)."""
        return self.files.cleanup(group)

    def shutdown(self) -> None:
        """Stop Ray (if this Cluster started it) and remove every file of the run; idempotent."""
        try:
            if self._started_ray and ray.is_initialized():
                ray.shutdown()
            self._started_ray = False
        finally:
            self.files.close()


def devices_from_nodes(nodes: List[dict], resource: str, kind: str) -> List[Device]:
    """The devices of the alive nodes among Ray's node records (`ray.nodes()`), `Resources[resource]` of
    each, numbered node by node: the head node first, then by address and port."""
    alive = [n for n in nodes if n.get("Alive")]
    ordered = sorted(alive, key=lambda n: ("node:__internal_head__" not in n["Resources"], n["NodeManagerAddress"],
                                           n["NodeManagerPort"]))
    devices: List[Device] = []
    for node in ordered:
        for local in range(int(node["Resources"].get(resource, 0))):
            devices.append(Device(len(devices), node["NodeID"], node["NodeManagerAddress"], local, kind))
    return devices


@ray.remote(max_retries=0)
def _probe_node() -> str:
    """Answers from the node it was pinned to (see `Cluster.lost_nodes`)."""
    return ray.get_runtime_context().get_node_id()


class NodeLostError(RunFailure):
    """Nodes holding devices of a multi-node run left the Ray cluster. The run stops (its devices are
    gone, so restarting the groups would wait for them); `--resume` continues once the nodes are back."""

    def __init__(self, lost: List[Device], devices: List[Device], cause: BaseException):
        self.node_ids = [d.node_id for d in lost]
        names = "; ".join(f"node {d.node_id} ({d.node_ip}) holding device(s) "
                          f"{[x.index for x in devices if x.node_id == d.node_id]}" for d in lost)
        super().__init__(f"lost {names}. The run stopped; once the node is back in the Ray cluster, continue with "
                         f"--resume <run directory>. First failure: {type(cause).__name__}: {cause}")


def check_token_auth(required: bool = True) -> bool:
    """Whether Ray's token authentication is on in this process (and so in the Ray it started or joined
    with this environment); raises InputError when it is off and `required`."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    enabled = is_token_auth_enabled()
    if not enabled:
        if required:
            raise InputError("Ray's token authentication is off (RAY_AUTH_MODE is not 'token'); Ray's services listen "
                             "on every interface and the token is what guards them. Set cluster.ray_token_auth=false "
                             "to run without it", key="cluster.ray_token_auth")
        logger.warning("Ray's token authentication is off: any host that reaches Ray's ports can run code here")
    return enabled


@contextmanager
def _environment(env: Dict[str, str]) -> Iterator[None]:
    """`env` in os.environ inside the block; the variables' previous values (or absence) after it."""
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _alongside(work: Optional[Callable[[], None]], timeout_s: float) -> Iterator[None]:
    """`work()` in a second thread while the block runs; joined (at most `timeout_s`) when it ends."""
    if work is None:
        yield
        return
    thread = threading.Thread(target=work, name="rlinf-while-ray-starts", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout_s)
    if thread.is_alive():
        raise RunFailure(f"the controller's work while Ray started was still running after {timeout_s:.0f} s "
                         "(cluster.wait_timeout_s)")


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
