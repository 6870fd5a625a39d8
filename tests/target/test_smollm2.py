"""SmolLM2-135M: the GGUF→safetensors conversion (on a stand-in model), its errors, and one slow real run."""

from __future__ import annotations

import re
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specauf.errors import ConfigError, PathNotFoundError
from specauf.target import (
    SMOLLM2_DIRNAME,
    SMOLLM2_NAME,
    SMOLLM2_SHA256,
    default_layer_ids,
    smollm2,
    smollm2_135m,
    tiny_random,
)

# --- the packaged GGUF -----------------------------------------------------------------------------------


def test_gguf_override_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECAUF_SMOLLM2_GGUF", str(tmp_path / "absent.gguf"))
    with pytest.raises(PathNotFoundError, match=r"absent\.gguf.*is not a file\. Fix: .*unset it to download"):
        smollm2._smollm2_gguf()


def test_gguf_override_wrong_file(monkeypatch, tmp_path):
    path = tmp_path / "other.gguf"
    path.write_bytes(b"GGUF but not ours")
    monkeypatch.setenv("SPECAUF_SMOLLM2_GGUF", str(path))
    with pytest.raises(ConfigError, match=rf"expected {SMOLLM2_SHA256}.*Fix: point it at that file"):
        smollm2._smollm2_gguf()


# --- conversion, with the tiny random model standing in for the dequantized GGUF -------------------------


class FakeGGUF:
    """Stands in for `AutoModelForCausalLM`/`AutoTokenizer` in `smollm2`: a `gguf_file=` load returns the
    tiny target's model or tokenizer (a fresh copy), any other call goes to transformers."""

    def __init__(self, real: type, part: str, on_load=None) -> None:
        self.real, self.part, self.on_load = real, part, on_load
        self.gguf_loads = 0

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def from_pretrained(self, path, *args, gguf_file: str | None = None, **kwargs):
        if gguf_file is None:
            return self.real.from_pretrained(path, *args, **kwargs)
        self.gguf_loads += 1
        if self.on_load is not None:
            self.on_load()
        return getattr(tiny_random(), self.part)


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    monkeypatch.setattr(smollm2, "_smollm2_gguf", lambda: tmp_path / "fake.gguf")
    model = FakeGGUF(AutoModelForCausalLM, "model")
    monkeypatch.setattr(smollm2, "AutoModelForCausalLM", model)
    monkeypatch.setattr(smollm2, "AutoTokenizer", FakeGGUF(AutoTokenizer, "tokenizer"))
    return model


def test_conversion_once_then_loads(fake_gguf, tmp_path):
    cache = tmp_path / "cache"
    target = smollm2_135m(cache=str(cache), num_feature_layers=2)
    final = cache / SMOLLM2_DIRNAME
    assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
    assert target.name == SMOLLM2_NAME and target.mask_token_id is None
    assert target.layer_ids == default_layer_ids(6, 2)
    for name, tensor in tiny_random().model.state_dict().items():
        assert torch.equal(target.model.state_dict()[name], tensor), name
    # A shared cache: readable by the group, and no temporary directory left beside it.
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in final.iterdir())
    assert [p.name for p in cache.iterdir()] == [SMOLLM2_DIRNAME]

    again = smollm2_135m(cache=str(cache), dtype="bfloat16")
    assert fake_gguf.gguf_loads == 1 and again.dtype == torch.bfloat16


def test_conversion_leaves_the_global_rng_alone(fake_gguf, tmp_path):
    """The first run converts, later runs load: the drafter built next must start from the same RNG state
    either way, or one seed gives two different initialisations (issue 19)."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    smollm2_135m(cache=str(tmp_path))  # converts
    assert fake_gguf.gguf_loads == 1
    assert torch.equal(torch.get_rng_state(), before)
    smollm2_135m(cache=str(tmp_path))  # loads the converted copy
    assert fake_gguf.gguf_loads == 1
    assert torch.equal(torch.get_rng_state(), before)


def test_interrupted_conversion_is_replaced(fake_gguf, tmp_path):
    final = tmp_path / SMOLLM2_DIRNAME
    final.mkdir()
    (final / "config.json").write_text("{}")  # a conversion that died before the weights
    smollm2_135m(cache=str(tmp_path))
    assert fake_gguf.gguf_loads == 1 and (final / "model.safetensors").is_file()
    assert (final / "config.json").read_text() != "{}"


def test_conversion_finished_elsewhere_is_kept(fake_gguf, tmp_path):
    """Two processes converting at once: the second to finish keeps the first's copy, never swaps it."""
    final = tmp_path / SMOLLM2_DIRNAME

    def other_process_finishes():
        tiny_random().model.save_pretrained(final)
        tiny_random().tokenizer.save_pretrained(final)
        (final / "theirs").write_text("")

    fake_gguf.on_load = other_process_finishes
    smollm2_135m(cache=str(tmp_path))
    assert (final / "theirs").exists()
    assert [p.name for p in tmp_path.iterdir()] == [SMOLLM2_DIRNAME]  # our temporary copy is gone


def test_wrong_dtype_fails_before_converting(fake_gguf, tmp_path):
    with pytest.raises(ConfigError, match=re.escape("target.dtype must be one of auto, float32, bfloat16")):
        smollm2_135m(cache=str(tmp_path), dtype="half")
    assert fake_gguf.gguf_loads == 0


def test_cache_entry_that_is_a_file(fake_gguf, tmp_path):
    (tmp_path / SMOLLM2_DIRNAME).write_text("")
    with pytest.raises(ConfigError, match=r"is a file.*Fix: remove it, or set target\.cache="):
        smollm2_135m(cache=str(tmp_path))
    assert fake_gguf.gguf_loads == 0


# --- the real default target -----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_135m():
    start = time.perf_counter()
    target = smollm2_135m()
    first = time.perf_counter() - start
    assert (target.num_layers, target.hidden_size, target.vocab_size) == (30, 576, 49152)
    assert target.mask_token_id is None
    assert target.layer_ids == default_layer_ids(30, 5) == [1, 8, 14, 21, 27]
    assert target.eos_token_ids == [2]
    assert target.lm_head_weight is target.model.get_input_embeddings().weight  # tied

    tok = target.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        ref = target.model.generate(prompt, max_new_tokens=24, do_sample=False)
    answer = tok.decode(ref[0, prompt.shape[1] :], skip_special_tokens=True)
    assert "4" in answer, answer

    # The decoder's path (step + cache) reproduces plain greedy decoding on the real model too.
    logits, feats, cache = target.step(prompt, logits_to_keep=1)
    assert feats.shape == (1, prompt.shape[1], 5 * 576)
    out = prompt
    while out.shape[1] < ref.shape[1]:
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
        if nxt.item() in target.eos_token_ids:
            break
        logits, _, cache = target.step(nxt, cache)
    assert torch.equal(out, ref)

    start = time.perf_counter()
    smollm2_135m()
    print(f"\nsmollm2_135m: first load {first:.1f} s, second {time.perf_counter() - start:.2f} s; {answer!r}")


@pytest.mark.slow
def test_smollm2_conversion_from_the_real_gguf(tmp_path):
    """The conversion itself (the default cache usually holds its result already): same weights again."""
    fresh = smollm2_135m(cache=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [SMOLLM2_DIRNAME]
    cached = smollm2_135m().model.state_dict()
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, cached[name]), name
