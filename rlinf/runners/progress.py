"""Console progress bar: step, reward, throughput and ETA (tqdm on stderr)."""

from typing import Dict

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, enabled: bool = True, desc: str = "train", initial: int = 0):
        self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, disable=not enabled,
                        initial=initial)

    def update(self, step: int, metrics: Dict[str, float]) -> None:
        post = {}
        for key, label in (("reward/mean", "reward"), ("reward/accuracy", "acc"),
                           ("env/success_rate", "success"), ("throughput/samples_per_s", "samples/s"),
                           ("eval/accuracy", "eval_acc")):
            if key in metrics:
                post[label] = f"{metrics[key]:.3g}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        self.bar.close()
