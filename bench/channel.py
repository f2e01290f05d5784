"""Channel throughput: 1 MB float32 tensors from a producer actor to a consumer actor.

    python -m bench.channel [--quick] [--items N] [--capacity C] [--batch B]

Compares three paths, each moving the same tensors between two Ray actors:
  raw      the producer `ray.put`s every tensor and returns the refs; the consumer `ray.get`s them
           (no queue: put phase, then get phase)
  channel  producer `Channel.put`, consumer `Channel.get`, running concurrently (capacity C)
  batched  the same with `put_batch` / `get_batch` of B items
Throughput is items (and MB = 2**20 bytes) per second of wall time on the driver. Last line:
`RESULT {json}`.
"""

import argparse
import json
import logging
import os
import platform
import time

import numpy as np
import ray
import torch

from rlinf.channel import Channel

ELEMENTS = 262144  # float32 -> 1 MB
MB = ELEMENTS * 4 / 2**20


def _tensor(i: int) -> torch.Tensor:
    return torch.from_numpy(np.full(ELEMENTS, float(i), dtype=np.float32))


@ray.remote(num_cpus=0)
class Producer:
    def __init__(self):
        self.tensors = [_tensor(i) for i in range(8)]

    def put_raw(self, n: int) -> list:
        return [ray.put(self.tensors[i % 8]) for i in range(n)]

    def put_channel(self, channel: Channel, n: int, batch: int) -> int:
        for start in range(0, n, batch):
            items = [self.tensors[i % 8] for i in range(start, min(n, start + batch))]
            if batch == 1:
                channel.put(items[0], producer="bench")
            else:
                channel.put_batch(items, producer="bench")
        return n


@ray.remote(num_cpus=0)
class Consumer:
    def get_raw(self, refs: list) -> float:
        checksum = 0.0
        for ref in refs:
            checksum += float(ray.get(ref)[-1])
        return checksum

    def get_channel(self, channel: Channel, n: int, batch: int) -> float:
        checksum, got = 0.0, 0
        while got < n:
            items = [channel.get()] if batch == 1 else channel.get_batch(min(batch, n - got))
            checksum += sum(float(t[-1]) for t in items)
            got += len(items)
        return checksum


def _expected_checksum(n: int) -> float:
    return float(sum(i % 8 for i in range(n)))


def bench_raw(producer, consumer, n: int) -> float:
    start = time.perf_counter()
    refs = ray.get(producer.put_raw.remote(n), timeout=600)
    checksum = ray.get(consumer.get_raw.remote(refs), timeout=600)
    elapsed = time.perf_counter() - start
    assert checksum == _expected_checksum(n), checksum
    return elapsed


def bench_channel(producer, consumer, n: int, capacity: int, batch: int, name: str) -> float:
    channel = Channel.create(name, capacity=capacity)
    try:
        start = time.perf_counter()
        done = producer.put_channel.remote(channel, n, batch)
        checksum = ray.get(consumer.get_channel.remote(channel, n, batch), timeout=600)
        ray.get(done, timeout=600)
        elapsed = time.perf_counter() - start
    finally:
        channel.destroy()
    assert checksum == _expected_checksum(n), checksum
    return elapsed


def _rates(n: int, seconds: float) -> dict:
    return {"seconds": round(seconds, 3), "items_per_s": round(n / seconds, 1), "mb_per_s": round(n * MB / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items (smoke run)")
    parser.add_argument("--items", type=int, default=None, help="tensors per path (default 1000, quick 100)")
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=None, help="runs per path, best kept (default 3, quick 1)")
    args = parser.parse_args()
    n = args.items or (100 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)

    logging.basicConfig(level=logging.WARNING)
    ray.init(namespace="rlinf", num_cpus=os.cpu_count(), logging_level=logging.WARNING, include_dashboard=False)
    try:
        producer, consumer = Producer.remote(), Consumer.remote()
        # warm up: start both actors, the object store and one channel actor
        bench_raw(producer, consumer, 8)
        bench_channel(producer, consumer, 8, args.capacity, 1, "bench-warmup")
        best = {"raw": float("inf"), "channel": float("inf"), "batched": float("inf")}
        for r in range(repeats):
            best["raw"] = min(best["raw"], bench_raw(producer, consumer, n))
            best["channel"] = min(best["channel"], bench_channel(producer, consumer, n, args.capacity, 1, f"bench-{r}"))
            best["batched"] = min(best["batched"],
                                  bench_channel(producer, consumer, n, args.capacity, args.batch, f"bench-b{r}"))
    finally:
        ray.shutdown()

    result = {
        "items": n, "item_mb": MB, "capacity": args.capacity, "batch": args.batch, "repeats": repeats,
        "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__, "ray": ray.__version__,
        **{path: _rates(n, s) for path, s in best.items()},
    }
    result["channel_over_raw"] = round(best["raw"] / best["channel"], 3)
    result["batched_over_raw"] = round(best["raw"] / best["batched"], 3)
    for path in ("raw", "channel", "batched"):
        r = result[path]
        print(f"{path:8s} {r['items_per_s']:9.1f} items/s {r['mb_per_s']:9.1f} MB/s ({r['seconds']} s for {n})")
    print(f"channel/raw throughput {result['channel_over_raw']}, batched/raw {result['batched_over_raw']}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
