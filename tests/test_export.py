"""Export to a Hugging Face-style directory and back: same weights, same drafts, same logits; DFlash naming;
no overwriting by accident; refusals with one clear line."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.evaluate import CheckpointError
from specauf.export import (
    ExportError,
    drafter_from_checkpoint,
    export_checkpoint,
    load_exported,
    load_exported_checkpoint,
)
from specauf.losses import AUF
from specauf.module import DrafterModule
from specauf.target import Target, tiny_random
from tests.conftest import REPO, run_cli

TINY_TARGET = {"num_layers": 4, "hidden_size": 32, "intermediate_size": 64, "num_feature_layers": 2}


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(**TINY_TARGET)


def trained_like(drafter: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (Domino's zero-initialised w2 included), as after some training."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in drafter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    return drafter.eval()


def make_drafter(kind: str, target: Target, **kwargs) -> DFlashDrafter:
    cls = {"dflash": DFlashDrafter, "domino": DominoDrafter}[kind]
    return trained_like(cls.from_target(target, num_layers=2, block_size=6, **kwargs))


def save_checkpoint(path: Path, target: Target, drafter: DFlashDrafter) -> Path:
    """A checkpoint in the trainer's format, its metadata written by the module's own hook (as Lightning does)."""
    config = {"target": {"_target_": "specauf.target.tiny_random", **TINY_TARGET}, "run_name": "loss=auf"}
    module = DrafterModule(drafter, target, AUF(), partial(torch.optim.AdamW),
                           run_config={"config": config, "choices": {"loss": "auf"}})  # fmt: skip
    checkpoint = {"state_dict": module.state_dict(), "global_step": 11, "epoch": 0}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def outputs(drafter: DFlashDrafter, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """Drafted tokens and the base logits of one block, after a short context."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    ctx = drafter.context_kv(target.features(ids), torch.arange(7)[None])
    tokens = drafter.draft(torch.tensor([11]), torch.tensor([7]), ctx, target.embed, target.lm_head_weight)
    block = torch.full((1, 1, drafter.block_size), 11)
    hidden = drafter(drafter.block_embeddings(block, target.embed), 7 + torch.arange(drafter.block_size)[None],
                     ctx, None)  # fmt: skip
    return tokens, drafter.drafted_hidden(hidden) @ target.lm_head_weight.t()


@pytest.mark.parametrize(
    ("kind", "kwargs", "architecture"),
    [
        ("dflash", {}, "DFlashDraftModel"),
        ("domino", {"gru_size": 16, "rank": 8}, "DominoDraftModel"),
        ("dflash", {"mask_token_id": None}, "DFlashDraftModel"),  # a target with no spare row: learned mask
    ],
    ids=["dflash", "domino", "dflash-learned-mask"],
)
def test_round_trip_gives_identical_drafts_and_logits(tmp_path, target, kind, kwargs, architecture):
    drafter = make_drafter(kind, target, **kwargs)
    ckpt = save_checkpoint(tmp_path / "last.ckpt", target, drafter)
    out = export_checkpoint(ckpt, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left

    loaded = load_exported(out, target)
    assert type(loaded) is type(drafter) and loaded.config == drafter.config and not loaded.training
    for (name, a), (_, b) in zip(loaded.state_dict().items(), drafter.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
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
    assert config["dflash_config"] == {
        "block_size": 6,
        "mask_token_id": c["mask_token_id"],
        "target_layer_ids": list(target.layer_ids),
        "label_alignment": "next_token" if kind == "domino" else "same_position",
    }
    assert config["torch_dtype"] == "float32" and config["specauf"]["target_name"] == target.name
    assert config["specauf"]["learned_mask_embedding"] == (c["mask_token_id"] is None)
    assert config["specauf"]["global_step"] == 11
    weights = load_file(out / "model.safetensors")
    # DFlash's published names: the fusion norm is hidden_norm; no embedding or LM head of its own.
    assert "hidden_norm.weight" in weights and "fc_norm.weight" not in weights and "fc.weight" in weights
    assert "layers.1.self_attn.q_norm.weight" in weights and "norm.weight" in weights
    assert not any("embed" in k or "lm_head" in k for k in weights)
    assert ("mask_embedding" in weights) == (c["mask_token_id"] is None)
    if kind == "domino":
        assert config["domino_config"]["rank"] == 8 and config["vocab_size"] == target.vocab_size
        assert {"gru.weight_ih_l0", "w1.weight", "w2.weight"} <= set(weights)

    # The evaluate-style loader: (drafter, target, meta), the target rebuilt from the stored training config.
    again, built, meta = load_exported_checkpoint(out)
    assert built.name == target.name and meta["global_step"] == 11
    assert meta["drafter_class"].endswith(type(drafter).__name__) and meta["target_name"] == target.name
    assert meta["config"]["config"]["run_name"] == "loss=auf" and meta["config"]["choices"] == {"loss": "auf"}
    assert torch.equal(outputs(again, built)[1], ref_logits)


def test_next_token_dflash_is_not_passed_off_as_dflash(tmp_path, target):
    drafter = make_drafter("dflash", target, label_offset=1)
    out = export_checkpoint(save_checkpoint(tmp_path / "last.ckpt", target, drafter), tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["DFlashNextTokenDraftModel"]
    assert load_exported(out).label_offset == 1


def test_bf16_export_halves_the_weights(tmp_path, target):
    drafter = make_drafter("dflash", target)
    out = export_checkpoint(save_checkpoint(tmp_path / "last.ckpt", target, drafter), tmp_path / "e",
                            dtype="bfloat16")  # fmt: skip
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert all(w.dtype == torch.bfloat16 for w in load_file(out / "model.safetensors").values())
    loaded = load_exported(out)
    for a, b in zip(loaded.parameters(), drafter.parameters(), strict=True):
        assert torch.equal(a, b.to(torch.bfloat16).float())
    with pytest.raises(ExportError, match="dtype must be one of"):
        export_checkpoint(tmp_path / "last.ckpt", tmp_path / "f", dtype="fp8")


def test_never_overwrites_by_accident(tmp_path, target):
    ckpt = save_checkpoint(tmp_path / "last.ckpt", target, make_drafter("dflash", target))
    out = tmp_path / "export"
    out.mkdir()  # an empty directory is fine
    export_checkpoint(ckpt, out)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ExportError, match=r"exists and is not empty.*overwrite=true"):
        export_checkpoint(ckpt, out)
    other = save_checkpoint(tmp_path / "other.ckpt", target, make_drafter("domino", target))
    export_checkpoint(other, out, overwrite=True)
    assert (out / "model.safetensors").read_bytes() != before
    assert json.loads((out / "config.json").read_text())["architectures"] == ["DominoDraftModel"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "last.ckpt", "other.ckpt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_checkpoint(ckpt, tmp_path / "file")


def test_refuses_another_target_and_broken_exports(tmp_path, target):
    drafter = make_drafter("dflash", target)
    out = export_checkpoint(save_checkpoint(tmp_path / "last.ckpt", target, drafter), tmp_path / "export")
    other = tiny_random(**{**TINY_TARGET, "seed": 5})
    with pytest.raises(
        CheckpointError, match=r"does not fit this target: it was trained for target 'tiny_random"
    ):
        load_exported(out, other)
    wider = tiny_random(**{**TINY_TARGET, "hidden_size": 48})
    with pytest.raises(CheckpointError, match=r"hidden size 32 vs the target's 48"):
        load_exported(out, wider)
    other_layers = tiny_random(**TINY_TARGET, layer_ids=[2])
    with pytest.raises(CheckpointError, match=r"it reads target layers \[1\], the target gives \[2\]"):
        load_exported(out, other_layers)

    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the file is corrupt or truncated"):
        load_exported(out)
    config = json.loads((out / "config.json").read_text())
    config["dflash_config"]["block_size"] = 6
    config["num_hidden_layers"] = 3  # the weights hold 2 layers
    (out / "config.json").write_text(json.dumps(config))
    export_checkpoint(tmp_path / "last.ckpt", tmp_path / "fresh")
    (tmp_path / "fresh" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"weights do not fit the DFlashDrafter its config describes: 1[0-9] missing"
    ):
        load_exported(tmp_path / "fresh")
    with pytest.raises(FileNotFoundError, match="is not an exported drafter"):
        load_exported(tmp_path)


def test_checkpoint_whose_weights_do_not_fit_its_drafter(tmp_path, target):
    drafter = make_drafter("dflash", target)
    path = save_checkpoint(tmp_path / "last.ckpt", target, drafter)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["specauf"]["drafter_class"] = "specauf.drafters.domino.DominoDrafter"  # a DFlash run's weights
    checkpoint["specauf"]["drafter_config"].update(vocab_size=target.vocab_size)
    torch.save(checkpoint, path)
    with pytest.raises(
        CheckpointError, match=r"weights do not fit the DominoDrafter.*missing \(e\.g\. gru\."
    ):
        drafter_from_checkpoint(path)


def test_cli(tmp_path, target):
    ckpt = save_checkpoint(tmp_path / "last.ckpt", target, make_drafter("dflash", target))
    out = tmp_path / "export"
    env = {"PYTHONPATH": str(REPO)}  # run from elsewhere: the export must leave nothing in the working dir
    proc = run_cli("specauf.export", f"ckpt={ckpt}", f"out={out}", cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported to {out}" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "last.ckpt"]  # no outputs/, no .hydra/
    proc = run_cli("specauf.export", f"ckpt={ckpt}", f"out={out}", cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 1
    assert (
        proc.stderr.startswith(f"specauf: error: out={out} exists and is not empty")
        and "Traceback" not in proc.stderr
    )
