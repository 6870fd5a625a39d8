"""`specauf.export_layout`: a drafter as a Hugging Face-style directory and back — same weights, same drafts,
same logits; DFlash naming; no overwriting by accident; refusals with one clear line. And the
`python -m specauf.export` entry point."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.errors import CheckpointError, ConfigError, PathNotFoundError
from specauf.export_layout import (
    drafter_config_from_hf,
    export_checkpoint,
    export_drafter,
    hf_config,
    read_export,
    read_export_config,
)
from specauf.loading import META_KEYS, load_drafter, load_with_target
from specauf.target import Target, tiny_random
from tests.checkpoints import save_checkpoint, trained_like

TINY_TARGET = {"num_layers": 4, "hidden_size": 32, "intermediate_size": 64, "num_feature_layers": 2}


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(**TINY_TARGET)


def make_drafter(kind: str, target: Target, **kwargs) -> DFlashDrafter:
    cls = {"dflash": DFlashDrafter, "domino": DominoDrafter}[kind]
    return trained_like(cls.from_target(target, num_layers=2, block_size=6, **kwargs))


def checkpoint(tmp_path, target, drafter, name: str = "last.ckpt"):
    return save_checkpoint(tmp_path / name, target, drafter, target_kwargs=TINY_TARGET, step=11)


def outputs(drafter: DFlashDrafter, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """Drafted tokens and the base logits of one block, after a short context."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    ctx = drafter.context_kv(target.features(ids), torch.arange(7)[None])
    tokens = drafter.draft(torch.tensor([11]), torch.tensor([7]), ctx, target.embed, target.lm_head_weight)
    block = torch.full((1, 1, drafter.block_size), 11)
    hidden = drafter(drafter.block_embeddings(block, target.embed), 7 + torch.arange(drafter.block_size)[None],
                     ctx, None)  # fmt: skip
    return tokens, drafter.drafted_hidden(hidden) @ target.lm_head_weight.t()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize(
    ("kind", "kwargs", "architecture"),
    [
        ("dflash", {}, "DFlashDraftModel"),
        ("domino", {"gru_size": 16, "rank": 8}, "DFlashDraftModel"),  # projector_type says Domino
        ("dflash", {"mask_token_id": None}, "DFlashDraftModel"),  # a target with no spare row: learned mask
    ],
    ids=["dflash", "domino", "dflash-learned-mask"],
)
def test_round_trip_gives_identical_drafts_and_logits(tmp_path, target, kind, kwargs, architecture):
    drafter = make_drafter(kind, target, **kwargs)
    ckpt = checkpoint(tmp_path, target, drafter)
    out = export_checkpoint(ckpt, tmp_path / "export")
    learned = drafter.config["mask_token_id"] is None
    files = ["config.json", *(["mask_embedding.pt"] if learned else []), "model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left

    loaded, meta = read_export(out)
    assert type(loaded) is type(drafter) and loaded.config == drafter.config and not loaded.training
    assert_same_weights(loaded, drafter)
    tokens, logits = outputs(loaded, target)
    ref_tokens, ref_logits = outputs(drafter, target)
    assert torch.equal(tokens, ref_tokens) and torch.equal(logits, ref_logits)

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [architecture] and config["model_type"] == "qwen3"
    c = drafter.config
    assert {k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "head_dim", "intermediate_size")} == {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": c["num_heads"],
        "num_key_value_heads": c["num_kv_heads"], "head_dim": c["head_dim"], "intermediate_size": 64}  # fmt: skip
    assert config["rope_theta"] == c["rope_theta"] and config["rms_norm_eps"] == c["rms_norm_eps"]
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": c["rope_theta"]}
    assert config["block_size"] == 6
    # What the field's loaders evaluate eagerly: the target's vocabulary and layer count.
    assert config["vocab_size"] == target.vocab_size and config["num_target_layers"] == target.num_layers
    domino = {"projector_type": "domino", "emb_dim": 8, "gru_hidden_dim": 16, "pure_draft_prefix_len": 1,
              "shift_label": True}  # fmt: skip
    assert config["dflash_config"] == {
        "block_size": 6,
        # A learned mask is served under an id that never occurs in text: here the target's spare row.
        "mask_token_id": target.mask_token_id,
        "target_layer_ids": list(target.layer_ids),
        "label_alignment": "next_token" if kind == "domino" else "same_position",
        **(domino if kind == "domino" else {}),
    }
    assert config["torch_dtype"] == config["dtype"] == "float32"
    saved = config["specauf"]
    assert saved["target_name"] == target.name and saved["global_step"] == 11
    assert saved["learned_mask_embedding"] == (c["mask_token_id"] is None)
    assert saved["checkpoint"] == str(ckpt) and saved["format_version"] == 2
    assert "training_config" not in saved  # schedules are not architecture
    weights = load_file(out / "model.safetensors")
    # DFlash's published names: the fusion norm is hidden_norm; no embedding or LM head of its own.
    assert "hidden_norm.weight" in weights and "fc_norm.weight" not in weights and "fc.weight" in weights
    assert "layers.1.self_attn.q_norm.weight" in weights and "norm.weight" in weights
    assert not any("embed_tokens" in k or "lm_head" in k for k in weights)
    assert "mask_embedding" not in weights  # vLLM drops it there; it reads mask_embedding.pt
    if learned:
        served = torch.load(out / "mask_embedding.pt", weights_only=True)
        assert served["mask_token_id"] == target.mask_token_id
        assert torch.equal(served["embedding"], drafter.mask_embedding.detach())
    if kind == "domino":  # SpecForge's names
        assert config["emb_dim"] == 8
        head = {
            "prefix_gru.weight_ih_l0",
            "prefix_gru.weight_hh_l0",
            "embed_proj.0.weight",
            "embed_proj.2.weight",
        }
        assert head <= set(weights) and not {"gru.weight_ih_l0", "w1.weight", "w2.weight"} & set(weights)

    # The meta has the same keys as a checkpoint's; what an export does not keep is None.
    assert set(meta) == set(META_KEYS) and meta["path"] == str(out)
    assert meta["training_config"] is None and meta["epoch"] is None
    assert meta["run_name"] == "loss=auf" and meta["choices"] == {"loss": "auf"} and meta["global_step"] == 11
    assert meta["drafter_class"].endswith(type(drafter).__name__) and meta["target_name"] == target.name

    # The one load path: load_drafter reads an export directory, load_with_target rebuilds its target.
    again, _ = load_drafter(out)
    assert_same_weights(again, drafter)
    again, built, meta = load_with_target(out)
    assert built is not target and built.name == target.name
    assert meta["target_config"] == {"_target_": "specauf.target.tiny_random", **TINY_TARGET}
    assert torch.equal(outputs(again, built)[1], ref_logits)


def test_next_token_dflash_is_not_passed_off_as_dflash(tmp_path, target):
    drafter = make_drafter("dflash", target, label_offset=1)
    out = export_checkpoint(checkpoint(tmp_path, target, drafter), tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DFlashNextTokenDraftModel"]
    assert config["dflash_config"]["label_alignment"] == "next_token"
    assert read_export(out)[0].label_offset == 1


def test_bf16_export_halves_the_weights(tmp_path, target):
    drafter = make_drafter("dflash", target)
    ckpt = checkpoint(tmp_path, target, drafter)
    out = export_checkpoint(ckpt, tmp_path / "e", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert all(w.dtype == torch.bfloat16 for w in load_file(out / "model.safetensors").values())
    loaded, _ = read_export(out)
    for a, b in zip(loaded.parameters(), drafter.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b.to(torch.bfloat16).float())
    with pytest.raises(ConfigError, match=r"dtype must be one of float32, bfloat16, float16; got 'fp8'"):
        export_checkpoint(ckpt, tmp_path / "f", dtype="fp8")
    assert not (tmp_path / "f").exists()


def test_an_export_re_exports_to_the_same_files(tmp_path, target):
    drafter = make_drafter("domino", target, gru_size=16, rank=8)
    first = export_checkpoint(checkpoint(tmp_path, target, drafter), tmp_path / "first")
    second = export_checkpoint(first, tmp_path / "second")
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, second))
    assert b["specauf"].pop("checkpoint") == str(first)
    a["specauf"].pop("checkpoint")
    assert a == b
    wa, wb = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_export_drafter_without_a_checkpoint(tmp_path, target):
    drafter = make_drafter("dflash", target)
    meta = {"target_layer_ids": list(target.layer_ids), "target_name": target.name,
            "target_vocab_size": target.vocab_size, "target_num_layers": target.num_layers}  # fmt: skip
    out = export_drafter(drafter, meta, tmp_path / "export")
    loaded, read_meta = read_export(out)
    assert_same_weights(loaded, drafter)
    assert read_meta["target_name"] == target.name and read_meta["global_step"] is None
    # The config rebuilds the drafter exactly.
    assert drafter_config_from_hf(read_export_config(out)) == drafter.config
    fused = len(target.layer_ids)
    with pytest.raises(CheckpointError, match=rf"records target layers \[\], but the drafter fuses {fused}"):
        hf_config(drafter, {"path": "x.ckpt"}, torch.float32)


def test_never_overwrites_by_accident(tmp_path, target):
    ckpt = checkpoint(tmp_path, target, make_drafter("dflash", target))
    out = tmp_path / "export"
    out.mkdir()  # an empty directory is fine
    export_checkpoint(ckpt, out)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"exists and is not empty.*overwrite=true"):
        export_checkpoint(ckpt, out)
    assert (out / "model.safetensors").read_bytes() == before
    other = checkpoint(tmp_path, target, make_drafter("domino", target), "other.ckpt")
    export_checkpoint(other, out, overwrite=True)
    assert (out / "model.safetensors").read_bytes() != before
    assert json.loads((out / "config.json").read_text())["dflash_config"]["projector_type"] == "domino"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "last.ckpt", "other.ckpt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export_checkpoint(ckpt, tmp_path / "file")


def test_export_of_a_corrupt_checkpoint_writes_nothing(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(
        CheckpointError, match=r"cannot read checkpoint .*last\.ckpt: the file is corrupt or truncated"
    ):
        export_checkpoint(tmp_path / "last.ckpt", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    with pytest.raises(PathNotFoundError, match="no checkpoint at"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "out")


def test_refuses_another_target(tmp_path, target):
    out = export_checkpoint(checkpoint(tmp_path, target, make_drafter("dflash", target)), tmp_path / "export")
    with pytest.raises(CheckpointError) as err:
        load_with_target(out, tiny_random(**TINY_TARGET, seed=5))
    assert str(err.value).startswith(
        f"{out}: the drafter was trained for another target: target 'tiny_random"
    )
    with pytest.raises(CheckpointError, match=r"hidden size 32 \(this target: 48\)"):
        load_with_target(out, tiny_random(**{**TINY_TARGET, "hidden_size": 48}))
    trained = re.escape(str(list(target.layer_ids)))
    with pytest.raises(CheckpointError, match=rf"target layers {trained} \(this target: \[2, 3\]\)"):
        load_with_target(out, tiny_random(**TINY_TARGET, layer_ids=[2, 3]))


def test_refuses_broken_exports(tmp_path, target):
    ckpt = checkpoint(tmp_path, target, make_drafter("dflash", target))
    out = export_checkpoint(ckpt, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())

    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the file is corrupt or truncated"):
        read_export(out)

    fresh = export_checkpoint(ckpt, tmp_path / "fresh")
    wrong = json.loads(json.dumps(config))
    wrong["num_hidden_layers"] = 3  # the weights hold 2 layers
    (fresh / "config.json").write_text(json.dumps(wrong))
    with pytest.raises(
        CheckpointError, match=r"weights do not fit the DFlashDrafter its config describes: 1[0-9] missing"
    ):
        read_export(fresh)

    wrong = json.loads(json.dumps(config))
    wrong["architectures"] = ["LlamaForCausalLM"]
    (fresh / "config.json").write_text(json.dumps(wrong))
    with pytest.raises(
        CheckpointError, match=r"architecture 'LlamaForCausalLM' is not one DFlashDrafter is exported as"
    ):
        read_export(fresh)

    (fresh / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "specauf"}))
    with pytest.raises(CheckpointError, match=r"config\.json is not a specauf export"):
        read_export(fresh)
    (fresh / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="is not a specauf export"):
        read_export(fresh)
    (fresh / "config.json").write_text('{"cut": ')
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON .*Fix: re-export"):
        read_export(fresh)

    with pytest.raises(PathNotFoundError, match="is not an exported drafter"):
        read_export(tmp_path)
    (fresh / "model.safetensors").unlink()
    with pytest.raises(PathNotFoundError, match=r"needs config\.json and model\.safetensors"):
        load_drafter(fresh)  # config.json alone: an export missing its weights, not a run directory


def test_a_learned_mask_needs_an_id_to_be_served_under(tmp_path):
    no_spare_row = tiny_random(**TINY_TARGET, with_mask_token=False)
    assert no_spare_row.mask_token_id is None and no_spare_row.serving_mask_token_id is None
    drafter = make_drafter("dflash", no_spare_row)
    ckpt = save_checkpoint(tmp_path / "last.ckpt", no_spare_row, drafter,
                           target_kwargs={**TINY_TARGET, "with_mask_token": False})  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"learned its mask embedding.*Fix: pass mask_token_id=<a token"
    ):
        export_checkpoint(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"mask_token_id=999 is outside the target's vocabulary of 259"):
        export_checkpoint(ckpt, tmp_path / "out", mask_token_id=999)
    out = export_checkpoint(ckpt, tmp_path / "out", mask_token_id=17)
    assert json.loads((out / "config.json").read_text())["dflash_config"]["mask_token_id"] == 17
    assert torch.load(out / "mask_embedding.pt", weights_only=True)["mask_token_id"] == 17
    loaded, _ = read_export(out)
    assert loaded.mask_token_id is None and torch.equal(loaded.mask_embedding, drafter.mask_embedding)
    (out / "mask_embedding.pt").unlink()
    with pytest.raises(CheckpointError, match=r"mask_embedding\.pt is missing"):
        read_export(out)
    spare_row = tiny_random(**TINY_TARGET)
    meta = {"target_layer_ids": spare_row.layer_ids, "target_vocab_size": 260, "target_num_layers": 4}
    with pytest.raises(ConfigError, match=r"trained with the target's spare row 259 as its mask"):
        export_drafter(make_drafter("dflash", spare_row), meta, tmp_path / "x", mask_token_id=17)
