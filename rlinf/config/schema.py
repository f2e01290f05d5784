"""The one typed configuration schema of rlinf.

Every section is a dataclass; every field carries its default and, in `metadata`, a `help` text and
the constraints `validate` enforces (`min`, `max`, `choices`). docs/configuration.md is generated
from these classes (`python -m rlinf.config.docs`), so the schema is the reference.

Parts receive their own section (`cfg.rollout`, `cfg.cluster`), never the whole tree, and read
fields directly: defaults live here, not in `get(key, default)` calls spread through workers.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


def _f(default: Any = None, help: str = "", factory: Any = None, **constraints: Any) -> Any:
    """A dataclass field with help text and validation constraints in its metadata."""
    meta = {"help": help, **constraints}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ClusterConfig:
    num_devices: int = _f(1, "Devices the run uses: real GPUs when present, else N virtual CPU devices.", min=1)
    address: Optional[str] = _f(None, "Ray cluster address to join (e.g. 'ray://head:10001' or 'auto'); null starts an embedded local Ray.")
    host: str = _f("127.0.0.1", "Address the Ray dashboard binds to when enabled (Ray's own services guard "
                   "themselves with token authentication, on by default).")
    dashboard: bool = _f(False, "Start the Ray dashboard (bound to `host`).")
    device_type: str = _f("auto", "Device kind: auto (cuda if available, else cpu), cpu or cuda.", choices=["auto", "cpu", "cuda"])
    component_placement: Dict[str, Any] = _f(
        help="Component(s) -> devices: ranges '0-3', lists '0,2', single ints, or 'all'. A key may name several "
        "components: 'actor,rollout'. Empty: every component on all devices (colocated). Components not named "
        "share the actor's devices.",
        factory=dict,
    )
    threads_per_worker: int = _f(1, "torch / OpenMP threads per worker process, and of the controller of `python -m rlinf.run` (avoid oversubscribing cores).", min=1)
    wait_timeout_s: float = _f(600.0, "Upper bound, in seconds, on any single wait for a worker group call.", min=1.0)
    ray_num_cpus: Optional[int] = _f(None, "Logical CPUs the embedded Ray advertises (null: Ray's default).", min=1)
    ray_token_auth: bool = _f(True, "Require Ray's token authentication (RAY_AUTH_MODE=token, Ray's default): Ray's "
                              "services listen on every interface, and the token is what keeps other hosts out. "
                              "false lets a run start on (or join) a Ray without it.")


@dataclass
class RunnerConfig:
    output_dir: Optional[str] = _f(None, "Run directory; null gives runs/<config-name>-<timestamp>.")
    max_steps: int = _f(20, "Training steps (policy updates) to run.", min=1)
    max_restarts: int = _f(0, "Times the controller restarts dead worker groups and resumes from the last checkpoint.", min=0)
    save_interval: int = _f(0, "Save a checkpoint every N steps and at the last step (0: no checkpoints).", min=0)
    eval_interval: int = _f(0, "Evaluate on held-out data every N steps (0: only at start and end).", min=0)
    stop_metric: Optional[str] = _f(None, "Stop training at the first periodic evaluation (runner.eval_interval) whose "
                                    "metric reaches runner.stop_value; that evaluation is the final one. Embodied: return, "
                                    "length, success_rate (maniskill, libero); reasoning: accuracy, reward. null: run "
                                    "all max_steps.", choices=["return", "length", "success_rate", "accuracy", "reward"])
    stop_value: Optional[float] = _f(None, "Threshold of runner.stop_metric (stop when the evaluation's value >= it).")
    workflow: str = _f("auto", "Dataflow (registry in rlinf.workflows): auto (embodied when env.id is set, else "
                       "reasoning), reasoning, embodied, reward_model, agent (multi-turn text / tool episodes "
                       "in an env group) or sft (supervised fine-tuning on conversations).",
                       choices=["auto", "reasoning", "embodied", "reward_model", "agent", "sft"])
    schedule: str = _f("auto", "Training schedule: auto (from placement and max_staleness), sync, async or pipeline.", choices=["auto", "sync", "async", "pipeline"])
    collect_ahead: bool = _f(True, "Sync schedule without offload (reasoning workflow, no dynamic sampling): train() "
                             "issues the next step's generation behind the transfer of the weights its update "
                             "makes, so it starts when they arrive. Same samples and weights; a batch issued for "
                             "a step that never runs (early stopping) is counted as dropped/unconsumed_at_stop.")
    seed: int = _f(1, "Global random seed.", min=0)
    log_interval: int = _f(1, "Log metrics every N steps.", min=1)
    progress_bar: bool = _f(True, "Show a console progress bar.")
    tensorboard: bool = _f(True, "Write TensorBoard event files to the run directory.")
    timeline: bool = _f(True, "Write a Chrome-trace timeline.json of every worker's phases.")
    wandb: str = _f("disabled", "Weights & Biases logging: disabled, offline (files under <run>/wandb, no network; "
                    "sync later with `wandb sync`) or online.", choices=["disabled", "offline", "online"])
    wandb_project: str = _f("rlinf", "W&B project name.")
    plots: bool = _f(True, "Write PNG learning curves and a timeline chart to plots/ at the end of the run.")


@dataclass
class AlgorithmConfig:
    adv_estimator: str = _f("grpo", "Advantage estimator name (registry in rlinf.algorithms).")
    policy_loss: str = _f("ppo", "Policy loss name (registry in rlinf.algorithms).")
    group_size: int = _f(4, "Samples per prompt / initial state (GRPO-style groups).", min=1)
    max_staleness: int = _f(0, "Largest allowed gap between the weight version that produced a sample and the one that trains on it (0: synchronous).", min=0)
    gamma: float = _f(1.0, "Discount factor.", min=0.0, max=1.0)
    lam: float = _f(1.0, "GAE lambda.", min=0.0, max=1.0)
    clip_ratio_low: float = _f(0.2, "PPO lower clip: ratio >= 1 - clip_ratio_low.", min=0.0, max=1.0)
    clip_ratio_high: float = _f(0.2, "PPO upper clip: ratio <= 1 + clip_ratio_high (clip-higher when larger than low).", min=0.0)
    dual_clip: Optional[float] = _f(None, "Dual-clip constant c > 1 bounding the loss for negative advantages (null: off).", min=1.0)
    kl_coef: float = _f(0.0, "Coefficient of the KL penalty to the frozen reference (0: no reference model).", min=0.0)
    kl_estimator: str = _f("k3", "KL estimator.", choices=["k1", "k2", "k3"])
    kl_in: str = _f("loss", "Where the KL to the reference goes: loss (kl_coef x KL added to the policy loss, as GRPO) "
                    "or reward (a per-token penalty -kl_coef x (log pi - log pi_ref) on the reward, as InstructGPT "
                    "and verl's use_kl_in_reward).", choices=["loss", "reward"])
    kl_target: Optional[float] = _f(None, "kl_in=reward: adaptive coefficient (Ziegler et al.): kl_coef moves so that "
                                    "the mean sequence KL tracks this target (null: fixed kl_coef).", min=0.0)
    kl_horizon: int = _f(10000, "Adaptive KL: horizon in samples of the proportional controller.", min=1)
    entropy_coef: float = _f(0.0, "Entropy bonus coefficient.", min=0.0)
    loss_agg: str = _f("token-mean", "Loss aggregation.", choices=["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
    norm_adv_by_std: bool = _f(True, "Divide group-relative advantages by the group's std (GRPO); false gives Dr.GRPO.")
    value_clip: float = _f(0.2, "Critic value clipping range.", min=0.0)
    dynamic_sampling: bool = _f(False, "DAPO dynamic sampling: drop groups whose rewards are all equal and refill.")
    dynamic_sampling_max_rounds: int = _f(4, "Generation rounds per step at most with dynamic_sampling (the first "
                                          "included); a batch still short after them is filled with dropped "
                                          "(zero-advantage) groups.", min=1)
    off_policy_correction: str = _f("none", "Stale-sample correction: none, or tis (truncated importance weights "
                                    "behaviour -> proximal policy, decoupled PPO).", choices=["none", "tis"])
    tis_cap: float = _f(2.0, "Upper bound of the truncated importance weights.", min=1.0)
    update_epochs: int = _f(1, "Passes over each batch per step.", min=1)
    value_coef: float = _f(0.5, "Weight of the value loss in the joint loss of an actor-critic with a value head (embodied PPO): pg - entropy_coef * H + value_coef * L_V.", min=0.0)
    reward_level: str = _f("token", "Granularity of rewards: token (LLM), action or chunk (VLA).", choices=["token", "action", "chunk"])
    logprob_level: str = _f("token", "Granularity of log-probs: token (LLM), action or chunk (VLA).", choices=["token", "action", "chunk"])


@dataclass
class ModelConfig:
    path: Optional[str] = _f(None, "Local directory of a Hugging Face model (null: build a tiny model from the fields below).")
    kind: str = _f("causal_lm", "Model family.", choices=["causal_lm", "mlp", "cnn", "vla"])
    hidden_size: int = _f(64, "Hidden width of a model built from config.", min=1)
    num_layers: int = _f(2, "Layers of a model built from config.", min=1)
    num_heads: int = _f(4, "Attention heads of a model built from config.", min=1)
    dtype: str = _f("float32", "Parameter dtype.", choices=["float32", "bfloat16", "float16"])
    char_vocab: str = _f("0123456789+-*=(), .?:#abcdefghijklmnopqrstuvwxyz",
                         "Alphabet of the character tokenizer of a model built from config (ignored with `path`).")
    action_head: str = _f("tokens", "VLA action head: tokens (OpenVLA-style: each action dimension a token of "
                          "action_bins bins on the last action_bins vocabulary ids, decoded autoregressively) or "
                          "chunk (OpenVLA-OFT-style: action_chunk x action dims tokens decoded in parallel, one "
                          "forward pass).", choices=["tokens", "chunk"])
    action_chunk: int = _f(1, "Actions a policy emits per decision; the env worker executes them open-loop over "
                           "action_chunk env steps (a chunk ends early when its episode ends).", min=1)
    action_bins: int = _f(256, "VLA: bins per action dimension (uniform over the action bounds).", min=2)
    vision_hidden_size: int = _f(64, "VLA: width of the vision encoder built from config (SigLIP ViT).", min=8)
    vision_layers: int = _f(2, "VLA: layers of the vision encoder built from config.", min=1)
    patch_size: int = _f(16, "VLA: ViT patch size in pixels (env.image_size must be a multiple).", min=2)
    instruction_tokens: int = _f(48, "VLA: instruction length in tokens (longer ones are cut, shorter padded).",
                                 min=1)
    cnn_channels: List[int] = _f(help="CNN policy: channels of its three conv layers (Nature-CNN kernels 8/4/3, "
                                 "strides 4/2/1).", factory=lambda: [16, 32, 32])
    trust_remote_code: bool = _f(False, "VLA with `path`: run the modelling code shipped inside the local checkpoint "
                                 "directory (OpenVLA / OpenVLA-OFT checkpoints define their model classes there); "
                                 "nothing is downloaded.")
    unnorm_key: Optional[str] = _f(None, "VLA with `path`: the dataset key of the checkpoint's action norm_stats "
                                   "(e.g. libero_spatial_no_noops) that maps its [-1, 1] bins to env actions; null: "
                                   "the only key, or bins used as actions directly.")
    lora_rank: int = _f(0, "VLA: rank r of LoRA adapters on the language model's q/k/v/o/gate/up/down projections "
                        "(0: off, full fine-tuning). With LoRA the LM (embeddings, lm_head) and the vision tower "
                        "are frozen; the adapters, the projector (and proprio projector), the action-chunk "
                        "embeddings and the value head train, and weight syncs / checkpoints carry only those.",
                        min=0)
    lora_alpha: float = _f(16.0, "VLA: LoRA scale numerator: the adapter adds (lora_alpha / lora_rank) * B A x.",
                           min=0.0)


@dataclass
class ActorConfig:
    model: ModelConfig = _f(help="Policy model.", factory=ModelConfig)
    backend: str = _f("fsdp", "Training backend.", choices=["fsdp", "deepspeed"])
    zero_stage: int = _f(2, "DeepSpeed ZeRO stage with backend=deepspeed (1: optimizer states, 2: + gradients, 3: + parameters sharded).", choices=[1, 2, 3])
    lr: float = _f(1e-4, "Learning rate.", min=0.0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", min=0.0)
    micro_batch_size: int = _f(8, "Sequences per forward/backward (gradient accumulation splits a batch into these).", min=1)
    grad_clip: float = _f(1.0, "Global gradient-norm clip (0: off).", min=0.0)
    max_tokens_per_micro_batch: Optional[int] = _f(None, "Sequence packing: micro-batches of at most this many "
                                                   "unpadded prompt + response tokens (a longer row alone), "
                                                   "attention kept within each sequence; also the reference's. "
                                                   "null: micro_batch_size padded rows.", min=1)
    fsdp_gather_once: bool = _f(False, "FSDP over more than one rank: each update pass gathers a layer's parameters "
                                "once and reduces the accumulated gradients once (not per micro-batch forward and "
                                "backward): fewer collectives, at the memory of full parameters and gradients on "
                                "every rank during the update (ZeRO-2-like).")
    global_batch_size: Optional[int] = _f(None, "Samples (env steps) per optimizer step over all actor ranks, i.e. the PPO minibatch; null: the whole batch, one step per epoch. Read by the embodied actor (the reasoning actor takes one step per epoch).", min=1)
    lr_schedule: str = _f("constant", "Learning-rate schedule over runner.max_steps: constant, or linear decay lr * (1 - step / max_steps) (embodied actor).", choices=["constant", "linear"])
    adam_eps: float = _f(1e-8, "Adam epsilon of the embodied actor's optimizer.", min=0.0)
    embodied_micro_batch_size: Optional[int] = _f(None, "Embodied actor: samples per forward/backward inside a PPO "
                                                  "minibatch (gradient accumulation, one optimizer step per "
                                                  "minibatch; bounds activation memory of large VLAs); null: the "
                                                  "whole minibatch in one pass.", min=1)
    offload: bool = _f(False, "Colocated placement, sync schedule: the actor's and the reference's parameters, "
                       "gradients and optimizer state leave the device in the phases that do not need them "
                       "(rlinf.runners.residency says who moves when).")
    init_checkpoint: Optional[str] = _f(None, "Start the actor (and the reference, the KL anchor) from the model "
                                        "weights of an rlinf checkpoint, not its optimizer: a checkpoint directory "
                                        "<run>/checkpoints/step_N, its actor/ folder, or a run directory (its "
                                        "newest complete checkpoint); e.g. an SFT run's checkpoint as the start of "
                                        "an RL run. FSDP causal-LM actors (reasoning, agent, sft workflows). "
                                        "null: actor.model as built.")


@dataclass
class CriticConfig:
    enabled: bool = _f(False, "Train a value model (PPO with GAE).")
    model: ModelConfig = _f(help="Value model (same fields as actor.model).", factory=ModelConfig)
    lr: float = _f(1e-4, "Critic learning rate.", min=0.0)
    micro_batch_size: int = _f(8, "Sequences per critic forward/backward.", min=1)
    grad_clip: float = _f(1.0, "Critic gradient-norm clip (0: off).", min=0.0)
    max_tokens_per_micro_batch: Optional[int] = _f(None, "Sequence packing for the critic (as "
                                                   "actor.max_tokens_per_micro_batch); null: micro_batch_size "
                                                   "padded rows.", min=1)
    fsdp_gather_once: bool = _f(False, "As actor.fsdp_gather_once, for the critic's update.")
    offload: bool = _f(False, "Colocated placement, sync schedule: the critic's state leaves the device outside "
                       "the train phase.")
    init_from_reward_model: bool = _f(False, "Start the critic from reward.model.path (its transformer and its "
                                      "one-label head as the value head), the usual RLHF recipe.")


@dataclass
class RolloutConfig:
    engine: str = _f("transformers", "Generation engine.", choices=["transformers", "vllm", "policy"])
    pipeline_stages: int = _f(1, "Split each env batch into k stages so simulation of stage i+1 overlaps inference on stage i (hybrid placement).", min=1)
    temperature: float = _f(1.0, "Sampling temperature (0: greedy).", min=0.0)
    top_p: float = _f(1.0, "Nucleus sampling mass.", min=0.0, max=1.0)
    top_k: int = _f(0, "Top-k sampling (0: off).", min=0)
    max_new_tokens: int = _f(16, "Tokens generated per sample at most.", min=1)
    stop: List[str] = _f(help="Stop strings.", factory=list)
    offload: bool = _f(False, "Colocated placement, sync schedule: the rollout sleeps outside generation (vLLM "
                       "sleep level 1 / wake_up where the platform supports it; the transformers engine keeps "
                       "its weights, which are bound to the resharding engine's views).")
    vllm_kv_cache_gib: int = _f(1, "engine=vllm on CPU: KV-cache memory per rollout rank in GiB "
                                "(VLLM_CPU_KVCACHE_SPACE).", min=1)
    vllm_gpu_memory_utilization: float = _f(0.5, "engine=vllm on GPU: fraction of GPU memory vLLM may take "
                                            "(leave room for a colocated actor).", min=0.05, max=1.0)
    vllm_max_num_seqs: int = _f(256, "engine=vllm: sequences the engine batches at once.", min=1)


@dataclass
class ReshardConfig:
    transport: str = _f("auto", "How weights reach the rollout: engine (planned reshard: shared memory when "
                        "colocated, bucketed sends when disaggregated; under the async schedule staged, the "
                        "rollout switches versions between requests), object_store (gather + Ray object store; "
                        "fallback), or auto (= engine).", choices=["auto", "engine", "object_store"])
    bucket_mb: float = _f(64.0, "Disaggregated weight sync: bytes per point-to-point message (MiB); a source packs "
                          "its slices for one target into buckets of this size.", min=0.001)
    pipeline_depth: int = _f(2, "Buckets in flight per peer (2: bucket i+1 travels while bucket i is applied).", min=1)
    timeout_s: float = _f(300.0, "Longest wait on one weight-sync message before the rank raises (a dead peer "
                          "becomes an error, not a hang).", min=1.0)
    idle_timeout_s: float = _f(3600.0, "Async schedule (staged targets): longest a rollout rank's receiver waits "
                               "for the next weight sync; past it the next switch raises and the run restarts.",
                               min=1.0)


@dataclass
class EnvConfig:
    simulator: str = _f("gym", "Simulator of env.id: gymnasium, ManiSkill3 or LIBERO.", choices=["gym", "maniskill", "libero"])
    id: Optional[str] = _f(None, "Simulator task id (e.g. 'CartPole-v1', 'PushCube-v1', 'libero_spatial'); null for text tasks.")
    num_envs: int = _f(8, "Parallel environments per env worker.", min=1)
    max_episode_steps: Optional[int] = _f(None, "Episode step limit (null: the task's own).", min=1)
    obs_mode: str = _f("state", "Observation mode.", choices=["state", "rgb"])
    rollout_steps: int = _f(128, "Steps every training env takes per training step (rollout horizon T); a step's batch is all envs x T env steps.", min=1)
    eval_episodes: int = _f(10, "Episodes of greedy (deterministic-policy) evaluation at start, every runner.eval_interval and at the end.", min=1)
    eval_local_policy_max_params: int = _f(2_000_000, "Greedy evaluation inside the env ranks (direct collection) runs on "
                                           "a copy of the paired rollout rank's policy, fetched once per evaluation, "
                                           "when the policy has at most this many parameters (no Ray call per env "
                                           "step); larger policies are asked per step. 0: always ask.", min=0)
    image_size: int = _f(128, "Height = width in pixels of camera images: rgb observations and the frames of "
                         "env.render() (videos).", min=16)
    reward_mode: Optional[str] = _f(None, "ManiSkill reward: dense, normalized_dense (dense scaled to [0, 1]), sparse "
                                    "(success) or none; null: the task's default.",
                                    choices=["dense", "normalized_dense", "sparse", "none"])
    control_mode: Optional[str] = _f(None, "ManiSkill controller (e.g. pd_joint_delta_pos, pd_ee_delta_pose); null: the "
                                     "task's default.")
    sim_backend: str = _f("auto", "ManiSkill physics: cpu (one PhysX CPU scene per env, vectorised in-process), gpu "
                          "(PhysX GPU, one scene batch of num_envs; needs CUDA) or auto (gpu when CUDA is present).",
                          choices=["auto", "cpu", "gpu"])
    ignore_terminations: bool = _f(False, "ManiSkill: episodes run to the time limit even after the task succeeds or "
                                   "fails (no early termination, as in ManiSkill's PPO without partial resets); "
                                   "an episode then counts as a success if it succeeded at any step.")
    task_ids: Optional[List[int]] = _f(None, "LIBERO: tasks of the suite (0-9) the env slots run, slot j task "
                                       "task_ids[j mod len]; null: slot j runs task j mod 10.")
    tools: List[str] = _f(help="Agent workflow: tools the model may call (rlinf.tools registry: calculator, python, "
                          "retrieve, ...); a non-empty list makes runner.workflow=auto pick the agent workflow.",
                          factory=list)
    max_turns: int = _f(4, "Agent workflow: model turns per episode at most (the episode is truncated after the last).",
                        min=1)
    max_total_tokens: int = _f(1024, "Agent workflow: prompt + model turns + tool results per episode at most, in "
                               "policy tokens (truncated once reached).", min=1)
    malformed_call_reward: float = _f(0.0, "Agent workflow: per-turn reward of a tool call that does not parse or "
                                      "names an unknown tool (e.g. -0.1).")
    system_prompt: bool = _f(True, "Agent workflow: start each episode with rlinf's tool-use system prompt (the call "
                             "format and the tool list); false for tiny models that learn the format by SFT.")
    scheduling: str = _f("per_trajectory", "Agent workflow: per_trajectory (each episode generates its next turn as "
                         "soon as its tool returns, batched with whichever others are ready) or lockstep (every "
                         "unfinished episode waits for the slowest tool of the round).",
                         choices=["per_trajectory", "lockstep"])
    tool_workers: int = _f(8, "Agent workflow: tool calls running at once per env worker (threads; the python tool "
                           "runs each call in a sandboxed process).", min=1)
    corpus: Optional[str] = _f(None, "Agent workflow: corpus file of the retrieve tool (.jsonl with a 'text' field, or "
                               "one document per line).")
    transcripts: int = _f(8, "Agent workflow: evaluation episodes written to <run>/transcripts/ (jsonl and markdown) "
                          "at every evaluation.", min=0)


@dataclass
class RewardModelConfig:
    path: Optional[str] = _f(None, "Local directory of a Hugging Face sequence-classification model with one label "
                             "(trained by rlinf's reward_model workflow, TRL's RewardTrainer or anyone) and its "
                             "tokenizer; it scores the decoded prompt + response text.")
    normalize: str = _f("none", "Score normalisation: none, or running (subtract the running mean and divide by the "
                        "running std of every score seen so far, Welford; saved in checkpoints).",
                        choices=["none", "running"])
    micro_batch_size: int = _f(16, "Sequences per reward-model forward.", min=1)
    max_length: int = _f(512, "Tokens of prompt + response the reward model reads at most (longer ones keep the "
                         "end).", min=8)


@dataclass
class RewardConfig:
    type: str = _f("rule", "Reward source: rule (the verifier `name`) or model (the learned reward model at "
                   "reward.model.path, optionally mixed with verifiers through reward.weights).",
                   choices=["rule", "model"])
    name: str = _f("exact_match", "Reward function name (registry in rlinf.workers.reward).")
    format_reward: float = _f(0.0, "Reward given instead of 0 when the verifier scores a non-empty answer 0.")
    in_rollout: bool = _f(False, "reward.type=rule: the rollout ranks score their own responses right after "
                          "generating them, with no reward group (one process per rollout rank fewer, and no hop "
                          "between generating and scoring); cluster.component_placement may still name 'reward' "
                          "(it is ignored). No effect with reward.type=model: a reward model has its own group.")
    model: RewardModelConfig = _f(help="The learned reward model (reward.type=model).", factory=RewardModelConfig)
    eval_verifiers: Dict[str, str] = _f(help="Verifiers scored on the held-out responses at every evaluation and "
                                        "reported as eval/<name>_reward, never trained on: e.g. {gold: "
                                        "synthetic_gold}, a gold reward that shows reward-model over-optimisation.",
                                        factory=dict)
    weights: Dict[str, float] = _f(help="reward.type=model: the reward is the weighted sum of the sources named here "
                                   "('model' and verifier names, e.g. {model: 1.0, exact_match: 0.5}); empty: "
                                   "the reward model's score alone.", factory=dict)


@dataclass
class DataConfig:
    task: str = _f("arith", "Task or dataset kind (e.g. 'arith', a reasoning-gym task name, 'jsonl'; files: "
                   "'prompts', 'preference', 'conversations' for runner.workflow sft).")
    path: Optional[str] = _f(None, "Dataset file for file-based tasks (GSM8K-format JSONL).")
    max_operand: int = _f(9, "Largest operand of the 'arith' and 'calc' tasks.", min=1)
    min_operand: int = _f(0, "Smallest operand of the 'calc' task.", min=0)
    answer_width: int = _f(0, "'arith': zero-pad answers to this many digits (0: no padding).", min=0)
    answer_reversed: bool = _f(False, "'arith': write answers least-significant digit first (easier for small "
                               "transformers to learn; still graded exactly).")
    batch_size: int = _f(8, "Prompts per training step (each sampled algorithm.group_size times).", min=1)
    train_size: int = _f(1000, "Training prompts generated (procedural tasks).", min=1)
    eval_size: int = _f(100, "Held-out evaluation prompts.", min=1)
    seed: int = _f(1234, "Seed of the data generator; the eval split uses a disjoint seed.", min=0)
    eval_path: Optional[str] = _f(None, "File tasks ('prompts', 'preference', 'conversations'): held-out file (null: the last "
                                  "data.eval_size rows of data.path are held out).")
    prompt_key: str = _f("prompt", "File tasks: column of the prompt text.")
    answer_key: Optional[str] = _f(None, "'prompts' files: column of a reference answer for verifiers (null: none).")
    chosen_key: str = _f("chosen", "'preference' files: column of the preferred response.")
    rejected_key: str = _f("rejected", "'preference' files: column of the dispreferred response.")
    margin_key: Optional[str] = _f(None, "'preference' files: column of a per-pair margin m in the Bradley-Terry "
                                   "loss -log sigmoid(r_chosen - r_rejected - m) (null: no margin).")
    max_length: int = _f(256, "'preference': tokens of prompt + response kept at most (longer ones keep the end); "
                         "'conversations': tokens of a rendered conversation kept at most (longer ones keep the "
                         "start, counted in sft/truncated).", min=8)
    messages_key: str = _f("messages", "'conversations' files: column of each row's message list, [{role, content}] "
                           "with roles system, user, assistant, tool; SFT puts loss on assistant tokens only.")


@dataclass
class EvalConfig:
    num_episodes: int = _f(10, "python -m rlinf.eval: greedy episodes per task; episode i of a task starts from seed "
                           "eval.seed + i (libero: from the task's fixed init state i, at most 50; every task of "
                           "the suite, or env.task_ids, is evaluated). Simulators only: a text agent plays every "
                           "held-out prompt of data once.", min=1)
    seed: int = _f(1_000_000, "First reset seed of the evaluation episodes (disjoint from the training envs' seeds by default).", min=0)
    video: bool = _f(False, "Write mp4 videos (env.render() frames) with the task id (libero: the instruction), step, "
                     "return and outcome drawn on the frames.")
    num_videos: int = _f(1, "Episodes recorded per task when eval.video is on (the first ones).", min=0)
    output_dir: Optional[str] = _f(None, "Where eval_summary.json and videos (text agents: "
                                       "transcripts.jsonl / .md) go; null: <run dir of the checkpoint>/eval-<timestamp>.")


@dataclass
class RLinfConfig:
    cluster: ClusterConfig = _f(help="Ray cluster, devices and component placement.", factory=ClusterConfig)
    runner: RunnerConfig = _f(help="The training loop, run directory and logging.", factory=RunnerConfig)
    algorithm: AlgorithmConfig = _f(help="Advantages, losses and staleness.", factory=AlgorithmConfig)
    actor: ActorConfig = _f(help="Policy training worker.", factory=ActorConfig)
    critic: CriticConfig = _f(help="Value training worker.", factory=CriticConfig)
    rollout: RolloutConfig = _f(help="Generation / policy inference worker.", factory=RolloutConfig)
    reshard: ReshardConfig = _f(help="Weight sync from the actor's training layout to the rollout's layout.",
                                factory=ReshardConfig)
    env: EnvConfig = _f(help="Simulator worker.", factory=EnvConfig)
    reward: RewardConfig = _f(help="Reward worker.", factory=RewardConfig)
    data: DataConfig = _f(help="Prompts and held-out evaluation data.", factory=DataConfig)
    eval: EvalConfig = _f(help="Checkpoint evaluation in simulators and of text agents (python -m rlinf.eval).", factory=EvalConfig)
