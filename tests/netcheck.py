"""Listening sockets of a run's processes, and whether Ray's services refuse a client without the token.

Ray 2.60's gRPC servers (gcs_server, raylet's node manager and object manager, every worker's core
worker service) listen on every interface; token authentication is what guards them. `refuses_without_token`
proves it for one port: a call without the token is answered UNAUTHENTICATED, and (positive control) the
same call with the token is not. HTTP listeners (Ray's runtime-env agent) must answer 401 without it.
"""

import os
import urllib.error
import urllib.request
from typing import Dict, Iterable, List, Optional, Tuple

import psutil

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

# One method per Ray gRPC service that can listen on a port; an unknown method is UNIMPLEMENTED before
# any authentication check, so the probe must name one the server has.
RAY_METHODS = [
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",    # gcs_server
    "/ray.rpc.NodeManagerService/GetNodeStats",      # raylet
    "/ray.rpc.ObjectManagerService/Pull",            # raylet's object manager
    "/ray.rpc.CoreWorkerService/GetCoreWorkerStats",  # every driver / worker process
]


def listening(pids: Iterable[int]) -> List[Tuple[int, str, str, int]]:
    """(pid, process name, ip, port) of every listening TCP socket of `pids` (gone processes skipped)."""
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            name = proc.name()
            conns = proc.net_connections("inet")
        except psutil.Error:
            continue
        out += [(pid, name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def descendants(pid: int) -> Dict[int, float]:
    """{pid: create_time} of `pid` and every process below it."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return {}
    out = {}
    for p in procs:
        try:
            out[p.pid] = p.create_time()
        except psutil.Error:
            pass
    return out


def alive(pid: int, create_time: float) -> bool:
    """The same process (not a reused pid) still runs and is not a zombie."""
    try:
        p = psutil.Process(pid)
        return p.create_time() == create_time and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def ray_token() -> str:
    """The token Ray uses here: RAY_AUTH_TOKEN, else the file at RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token
    (Ray's own order; its loader answers '' in a process whose auth mode is not 'token')."""
    from ray._raylet import AuthenticationTokenLoader

    token = AuthenticationTokenLoader.instance().get_raw_token()
    if token:
        return token
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    with open(path) as f:
        return f.read().strip()


def _connect_host(ip: str) -> str:
    return "127.0.0.1" if ip in ("0.0.0.0", "::") else ip


TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"}


def _grpc_codes(host: str, port: int, token: Optional[str]) -> List[str]:
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    meta = (("authorization", f"Bearer {token}"),) if token else None
    codes = []
    with grpc.insecure_channel(target) as channel:
        for method in RAY_METHODS:
            try:
                channel.unary_unary(method)(b"", timeout=10, metadata=meta)
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
    return codes


def _http_status(host: str, port: int) -> Optional[int]:
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


def refuses_without_token(ip: str, port: int, token: Optional[str] = None) -> str:
    """'grpc' or 'http' when the listener is a Ray service that refuses a client without the token (and,
    for gRPC, accepts the same call with it); 'retry' when the answers were inconclusive (a server still
    starting, a deadline missed on a loaded machine); otherwise a description of what it answered."""
    host = _connect_host(ip)
    without = _grpc_codes(host, port, None)
    if "UNAUTHENTICATED" in without:
        i = without.index("UNAUTHENTICATED")
        with_token = _grpc_codes(host, port, token or ray_token())
        if with_token[i] in TRANSIENT:
            return "retry"
        return "grpc" if with_token[i] != "UNAUTHENTICATED" else f"grpc refuses the token too: {with_token}"
    http = _http_status(host, port)
    if http == 401:
        return "http"
    if any(code in TRANSIENT for code in without):
        return "retry"
    return f"grpc {without}, http {http}"


def env_without_token() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}


AUTOSCALER_METRICS_PORT = 44217


def is_ray_autoscaler_metrics(pid: int, port: int) -> bool:
    """The one listener of a run that is neither loopback nor token-guarded: Ray's autoscaler monitor's
    read-only Prometheus endpoint (docs/security.md says why it stays and what it exposes)."""
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return port == AUTOSCALER_METRICS_PORT and "autoscaler/_private/monitor.py" in cmdline
