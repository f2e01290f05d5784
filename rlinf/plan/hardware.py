"""Hardware files: what the planner knows about the devices it plans for.

A hardware file is YAML (configs/hardware/*.yaml) with these keys (every number states its source in a
comment of the file):

    name: h100_80g
    device_memory_gib: 80          # memory of one device
    memory_reserve: 0.1            # fraction kept free (allocator fragmentation, CUDA context, NCCL buffers)
    flops_per_device: 989.0e12     # dense bf16 peak FLOP/s
    memory_bandwidth_gbs: 3350     # device memory (HBM) bandwidth, GB/s
    intra_node_bandwidth_gbs: 450  # NVLink, per device, one direction, GB/s
    inter_node_bandwidth_gbs: 50   # network per device (400 Gb/s InfiniBand), GB/s
    devices_per_node: 8
    host_bandwidth_gbs: 25         # device <-> host (PCIe) for offload, GB/s
    shared_cores: null             # CPU machines only: cores every virtual device shares (null: devices
                                   # are independent, as GPUs are)
    train_mfu: 0.4                 # fraction of flops_per_device a training step reaches
    decode_efficiency: 0.6         # fraction of memory_bandwidth_gbs a decode step reaches
    env_steps_per_s: 0             # simulator steps / s of one device (embodied), 0: unknown

`local_hardware(num_devices)` describes this kind of CPU machine when no file is given: virtual devices
that share the machine's cores and memory.
"""

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import yaml

from rlinf.errors import InputError

GIB = 1024 ** 3


@dataclass(frozen=True)
class Hardware:
    name: str
    device_memory_gib: float
    memory_reserve: float = 0.1
    flops_per_device: float = 0.0
    memory_bandwidth_gbs: float = 0.0
    intra_node_bandwidth_gbs: float = 1.0
    inter_node_bandwidth_gbs: float = 1.0
    devices_per_node: int = 8
    host_bandwidth_gbs: float = 25.0
    shared_cores: Optional[int] = None
    train_mfu: float = 0.4
    decode_efficiency: float = 0.6
    env_steps_per_s: float = 0.0

    @property
    def usable_bytes(self) -> float:
        """Bytes of one device a plan may use: device_memory_gib x (1 - memory_reserve)."""
        return self.device_memory_gib * GIB * (1.0 - self.memory_reserve)

    def link_bandwidth(self, devices: int) -> float:
        """Bytes/s of a transfer that spans `devices` devices: NVLink inside a node, the network beyond it."""
        gbs = self.intra_node_bandwidth_gbs if devices <= self.devices_per_node else self.inter_node_bandwidth_gbs
        return gbs * 1e9

    def parallelism(self, devices: int) -> float:
        """Effective parallel speed of `devices` devices: eff(d) = min(d, shared_cores) on a CPU machine whose
        virtual devices share its cores, eff(d) = d when devices are independent (GPUs)."""
        if self.shared_cores is None:
            return float(devices)
        return float(max(1, min(devices, self.shared_cores)))


def local_hardware(num_devices: int) -> Hardware:
    """This machine: virtual devices sharing its cores (os.cpu_count) and memory (split evenly), gloo over
    loopback (about 1.5 GB/s: 100 MB all_reduce 0.06-0.07 s, docs ENVIRONMENT)."""
    cores = os.cpu_count() or 1
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * GIB
    return Hardware(name=f"local_cpu_{cores}c", device_memory_gib=total / GIB / max(1, num_devices),
                    memory_reserve=0.2, intra_node_bandwidth_gbs=1.5, inter_node_bandwidth_gbs=1.5,
                    devices_per_node=max(1, num_devices), shared_cores=cores)


def load_hardware(path: str) -> Hardware:
    """Read a hardware file; unknown or missing keys are input errors naming the key."""
    p = Path(path)
    if not p.is_file():
        raise InputError("hardware file not found", key=str(path))
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {e}".splitlines()[0], key=str(path)) from None
    if not isinstance(raw, dict):
        raise InputError("expected a mapping of hardware keys", key=str(path))
    known = {f.name: f for f in fields(Hardware)}
    for key in raw:
        if key not in known:
            raise InputError(f"unknown key (known: {', '.join(known)})", key=f"{path}:{key}")
    for key in ("name", "device_memory_gib"):
        if key not in raw:
            raise InputError("missing key", key=f"{path}:{key}")
    values = {}
    for key, value in raw.items():
        if key == "name":
            values[key] = str(value)
        elif key in ("devices_per_node", "shared_cores"):
            values[key] = None if value is None else int(value)
        else:
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise InputError(f"expected a number, got {value!r}", key=f"{path}:{key}") from None
    return Hardware(**values)
