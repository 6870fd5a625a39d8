"""The factories: the tiny random Llama, and loading by local directory or hub id, with their errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch.testing import assert_close

from specauf.errors import ConfigError, DownloadError, PathNotFoundError
from specauf.hub import hub_unreachable
from specauf.target import default_layer_ids, from_pretrained, qwen3_8b, tiny_random
from tests.target.helpers import TOL, random_ids

# --- tiny_random -----------------------------------------------------------------------------------------


def test_tiny_random_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny_random(seed=3), tiny_random(seed=3), tiny_random(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.name == b.name != c.name
    for (k, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), k
    assert not torch.equal(a.lm_head_weight, c.lm_head_weight)


def test_tiny_random_without_mask_row():
    t = tiny_random(with_mask_token=False, tie_word_embeddings=True)
    assert t.mask_token_id is None and t.vocab_size == 259
    assert t.lm_head_weight is t.model.get_input_embeddings().weight


# --- from_pretrained: local directories ------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory, target):
    """The tiny target saved as a plain HF model directory."""
    path = tmp_path_factory.mktemp("tiny_model")
    target.model.save_pretrained(path)
    target.tokenizer.save_pretrained(path)
    return path


def test_from_pretrained_local_roundtrip(saved, target):
    loaded = from_pretrained(str(saved), num_feature_layers=2, mask_token_id=259, name="tiny")
    assert loaded.name == "tiny" and loaded.layer_ids == default_layer_ids(6, 2)
    assert loaded.mask_token_id == 259
    assert all(not p.requires_grad for p in loaded.parameters())
    ids = random_ids(1, 8)
    assert_close(loaded.step(ids)[0], target.step(ids)[0], **TOL)
    assert from_pretrained(str(saved), dtype="bfloat16").dtype == torch.bfloat16
    assert from_pretrained(str(saved), dtype="auto").dtype == torch.float32  # the checkpoint's own
    with pytest.raises(ConfigError, match="mask_token_id"):
        from_pretrained(str(saved), mask_token_id=260)


@pytest.mark.parametrize("dtype", ["fp8", "bf16", "float64"])
def test_wrong_dtype_names_the_choices(saved, dtype):
    with pytest.raises(
        ConfigError,
        match=re.escape(f"target.dtype must be one of auto, float32, bfloat16, float16; got {dtype!r}"),
    ):
        from_pretrained(str(saved), dtype=dtype)


@pytest.mark.parametrize("path", ["/no/such/model_dir", "./missing_model", "~/definitely-missing-specauf"])
def test_missing_local_path(path):
    with pytest.raises(PathNotFoundError, match=re.escape(path)) as err:
        from_pretrained(path)
    assert "does not exist" in str(err.value) and "Fix: pass target.path=" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # callers catching the built-in type still catch it


def test_missing_path_whose_parent_exists_is_not_a_hub_id(tmp_path, monkeypatch):
    """`outputs/model` with `outputs/` here is a typo'd path, not a hub repo named `outputs`."""
    (tmp_path / "outputs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PathNotFoundError, match="does not exist"):
        from_pretrained("outputs/model")


def test_qwen3_8b_missing_local_copy():
    with pytest.raises(PathNotFoundError, match="/no/such/qwen"):
        qwen3_8b(path="/no/such/qwen")


def test_local_dir_without_config(tmp_path):
    with pytest.raises(
        PathNotFoundError, match=r"a directory without config\.json\. Fix: pass target\.path="
    ):
        from_pretrained(str(tmp_path))


def test_local_file_is_not_a_model_dir(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(
        PathNotFoundError, match=r"is a file\. Fix: pass target\.path=<dir with config\.json>"
    ):
        from_pretrained(str(path))


def test_local_dir_without_weights(tmp_path, target):
    target.model.config.save_pretrained(tmp_path)
    target.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(PathNotFoundError, match=r"cannot be loaded .*Fix: point target\.path at a complete"):
        from_pretrained(str(tmp_path))


# --- from_pretrained: the hub ----------------------------------------------------------------------------

# A well-formed hub id that is in no local cache (the tests run with HF_HUB_OFFLINE=1, see tests/conftest.py).
ABSENT = "specauf-tests/no-such-model"


def test_hub_id_not_available_offline():
    with pytest.raises(DownloadError, match=re.escape(ABSENT)) as err:
        from_pretrained(ABSENT)
    assert "Fix: download it and pass target.path=" in str(err.value)
    assert isinstance(err.value, OSError)


def test_unreachable_hub_says_why(monkeypatch):
    """No route to the hub (online mode): fail at once, saying so, instead of after transformers' retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    hub_unreachable.cache_clear()
    try:
        with pytest.raises(DownloadError, match=r"the hub \(127\.0\.0\.1\) is unreachable") as err:
            from_pretrained(ABSENT)
    finally:
        hub_unreachable.cache_clear()
    assert "target=smollm2_135m" in str(err.value)
