"""Worker classes of the GPU tests (importable by Ray workers): each keeps its tensors on its CUDA device."""

import hashlib
import os
from datetime import timedelta
from typing import Dict

import torch
import torch.distributed as dist

from rlinf.scheduler import Worker

COLLECTIVE_TIMEOUT = timedelta(seconds=120)


def gpus() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def need_gpus(n: int):
    """skipif marker: fewer than `n` CUDA devices here."""
    import pytest

    return pytest.mark.skipif(gpus() < n, reason=f"needs {n} CUDA device(s), found {gpus()}")


def digest(t: torch.Tensor) -> str:
    """blake2b of a tensor's bytes (copied to the host first)."""
    data = t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    return hashlib.blake2b(data.data, digest_size=16).hexdigest()


class CudaEchoWorker(Worker):
    """Collectives and link transfers on the rank's GPU, with integer-valued float64 data (exact sums)."""

    def info(self) -> Dict[str, str]:
        return {"backend": dist.get_backend(), "device": str(self.device),
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "uuid": str(torch.cuda.get_device_properties(self.device).uuid)}

    def all_reduce_exact(self, n: int) -> torch.Tensor:
        """Sum over ranks of arange(n) * (rank + 1), computed on the device; returned on the host."""
        t = torch.arange(n, dtype=torch.float64, device=self.device) * (self.rank + 1)
        work = dist.all_reduce(t, async_op=True)
        work.wait(COLLECTIVE_TIMEOUT)
        torch.cuda.synchronize(self.device)
        return t.cpu()

    def broadcast_from(self, root: int, n: int) -> torch.Tensor:
        t = torch.full((n,), float(self.rank + 7), dtype=torch.float32, device=self.device)
        work = dist.broadcast(t, src=root, async_op=True)
        work.wait(COLLECTIVE_TIMEOUT)
        return t.cpu()

    def send_to(self, peer: str, n: int) -> str:
        """Send a seeded random bf16 tensor over the link; returns its digest."""
        g = torch.Generator(device=self.device).manual_seed(1234 + self.rank)
        t = torch.randn((n, 3), generator=g, device=self.device).to(torch.bfloat16)
        self.send_tensor(t, peer, self.rank)
        return digest(t)

    def recv_from(self, peer: str) -> Dict[str, object]:
        t = self.recv_tensor(peer, self.rank)
        return {"digest": digest(t), "device": str(t.device), "dtype": str(t.dtype), "shape": tuple(t.shape)}


class IpcArenaWorker(Worker):
    """Both sides of the resharding engine's colocated CUDA IPC hand-off, without the link: a target
    allocates an arena and exports the handle `ReshardTarget` makes; a source opens it with the
    engine's `_open_arena` and writes into it."""

    def make_arena(self, nbytes: int) -> dict:
        from torch.multiprocessing.reductions import reduce_tensor

        self.arena = torch.zeros(nbytes, dtype=torch.uint8, device=self.device)
        return {"kind": "cuda_ipc", "uuid": str(torch.cuda.get_device_properties(self.device).uuid),
                "ipc": reduce_tensor(self.arena), "nbytes": nbytes}

    def write_into(self, handle: dict, seed: int) -> Dict[str, object]:
        """Open the arena behind `handle`; fill it with seeded random bytes; returns whether it opened,
        the digest of what was written and the arena's size as opened."""
        from rlinf.reshard.transport import _open_arena

        arena = _open_arena(handle)
        if arena is None:
            return {"opened": False}
        g = torch.Generator(device=self.device).manual_seed(seed)
        data = torch.randint(0, 256, (handle["nbytes"],), generator=g, dtype=torch.uint8, device=self.device)
        arena.copy_(data)
        torch.cuda.synchronize(self.device)
        return {"opened": True, "digest": digest(data), "numel": arena.numel()}

    def arena_digest(self) -> str:
        torch.cuda.synchronize(self.device)
        return digest(self.arena)
