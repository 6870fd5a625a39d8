"""`specauf.loading`, the one load path: a .ckpt, a run directory or an export → drafter (and its target).

The export side (`read_export`, through `load_drafter` / `load_with_target`) is in test_export_layout.py.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import pytest
import torch

from specauf.checkpointing import AtomicCheckpointIO, check_resumable
from specauf.drafters.dflash import DFlashDrafter
from specauf.errors import CheckpointError, PathNotFoundError
from specauf.loading import (
    META_KEYS,
    build_target,
    check_target,
    checkpoint_file,
    is_export,
    load_drafter,
    load_weights,
    load_with_target,
    read_checkpoint,
    target_problems,
    unreadable,
)
from specauf.losses import AUF
from specauf.module import DrafterModule
from specauf.target import Target, tiny_random
from tests.checkpoints import TINY_TARGET, save_checkpoint


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(**TINY_TARGET)


@pytest.fixture(scope="module")
def drafter(target: Target) -> DFlashDrafter:
    torch.manual_seed(0)
    return DFlashDrafter.from_target(target, num_layers=1, block_size=4, init_std=0.2).eval()


@pytest.fixture
def ckpt(tmp_path, target, drafter) -> Path:
    return save_checkpoint(tmp_path / "last.ckpt", target, drafter)


def drafts(drafter: DFlashDrafter, target: Target) -> torch.Tensor:
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    ctx = drafter.context_kv(target.features(ids), torch.arange(5)[None])
    return drafter.draft(torch.tensor([9]), torch.tensor([5]), ctx, target.embed, target.lm_head_weight)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


# --- files ------------------------------------------------------------------------------------------------


def test_checkpoint_file_finds_a_run_directorys_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert checkpoint_file(run) == run / "checkpoints" / "last.ckpt"
    assert checkpoint_file(run / "checkpoints" / "last.ckpt") == run / "checkpoints" / "last.ckpt"
    with pytest.raises(PathNotFoundError, match=r"no checkpoint at .*nope\.ckpt\. Fix: pass ckpt="):
        checkpoint_file(tmp_path / "nope.ckpt")
    # A directory that is neither a run nor an export names the file it looked for.
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*empty/checkpoints/last\.ckpt"):
        checkpoint_file(tmp_path / "empty")


def test_is_export(tmp_path, ckpt):
    assert not is_export(ckpt) and not is_export(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert is_export(tmp_path)
    assert not is_export(tmp_path / "config.json")


def test_read_checkpoint_accepts_only_a_dict_of_tensors(tmp_path):
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"list\.ckpt is not a checkpoint \(it holds a list\)"):
        read_checkpoint(tmp_path / "list.ckpt")

    class Code:  # weights_only: a pickle that would run code is refused, as an unreadable file
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"x": Code()}, tmp_path / "code.ckpt")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(tmp_path / "code.ckpt")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_unreadable_is_one_short_line():
    err = unreadable("/runs/x/last.ckpt", RuntimeError("zip\narchive   broken " + "y" * 500))
    message = str(err)
    assert isinstance(err, CheckpointError) and "\n" not in message
    assert message.startswith(
        "cannot read checkpoint /runs/x/last.ckpt: the file is corrupt or truncated (RuntimeError: zip archive "
        "broken y"
    )
    assert message.endswith("or re-run the training") and len(message) < 400


# --- the drafter ------------------------------------------------------------------------------------------


def test_load_drafter_round_trip_and_meta(ckpt, target, drafter):
    loaded, meta = load_drafter(ckpt)
    assert type(loaded) is DFlashDrafter and loaded.config == drafter.config and not loaded.training
    assert_same_weights(loaded, drafter)
    assert set(meta) == set(META_KEYS)
    assert meta["drafter_class"] == "specauf.drafters.dflash.DFlashDrafter"
    assert meta["drafter_config"] == drafter.config
    assert meta["target_name"] == target.name and meta["target_layer_ids"] == list(target.layer_ids)
    assert meta["target_hidden_size"] == 32 and meta["target_vocab_size"] == target.vocab_size
    assert meta["target_num_layers"] == 2
    assert meta["target_config"] == {"_target_": "specauf.target.tiny_random", **TINY_TARGET}
    assert meta["run_name"] == "loss=auf" and meta["choices"] == {"loss": "auf"}
    assert meta["training_config"]["trainer"] == {"max_steps": 10}
    assert meta["path"] == str(ckpt) and meta["global_step"] == 7 and meta["epoch"] == 0


def test_load_with_target_rebuilds_the_recorded_target(tmp_path, ckpt, target, drafter):
    loaded, built, meta = load_with_target(ckpt)
    assert built is not target and built.name == target.name and meta["global_step"] == 7
    assert torch.equal(drafts(loaded, built), drafts(drafter, target))
    # A given target is used as is; a run directory finds checkpoints/last.ckpt.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt.rename(run / "checkpoints" / "last.ckpt")
    _, same, meta = load_with_target(run, target=target)
    assert same is target and meta["path"] == str(run / "checkpoints" / "last.ckpt")


def test_load_with_target_places_both(ckpt):
    drafter, target, _ = load_with_target(ckpt, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in drafter.parameters()} == {torch.bfloat16}
    assert target.dtype == torch.bfloat16 and target.lm_head_weight.dtype == torch.bfloat16
    assert not drafter.training


def recorded_factory(**kwargs):
    """A stand-in target factory for `build_target`: hands back what it was called with."""
    return kwargs


def test_build_target_passes_the_dtype_only_to_factories_that_take_one(tmp_path):
    meta = {"target_config": {"_target_": "tests.test_loading.recorded_factory", "dtype": "float32", "x": 1}}
    assert build_target(meta, torch.bfloat16) == {"dtype": "bfloat16", "x": 1}
    assert build_target(meta) == {"dtype": "float32", "x": 1}
    meta = {"target_config": {"_target_": "tests.test_loading.recorded_factory", "x": 1}}
    assert build_target(meta, torch.bfloat16) == {"x": 1}
    for config in (None, {}, {"name": "no _target_"}):
        with pytest.raises(CheckpointError, match=r"x\.ckpt: no target config is recorded.*target=\.\.\."):
            build_target({"target_config": config, "path": "x.ckpt"})


def test_checkpoint_errors(tmp_path, target, drafter):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*Fix"):
        load_drafter(tmp_path / "nope.ckpt")
    good = save_checkpoint(tmp_path / "good.ckpt", target, drafter).read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt: the file is corrupt or truncated"):
        load_drafter(tmp_path / "truncated.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_drafter(tmp_path / "garbage.ckpt")
    torch.save({"state_dict": {}, "global_step": 1}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointError, match=r"lightning\.ckpt is not a specauf checkpoint \(no 'specauf'"):
        load_drafter(tmp_path / "lightning.ckpt")


def edited(path: Path, edit) -> Path:
    checkpoint = torch.load(path, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["specauf"].pop("drafter_config"), "no drafter settings recorded"),
        (lambda c: c.pop("state_dict"), "it holds no drafter weights; is the file complete"),
        (
            lambda c: c["specauf"].update(drafter_class="specauf.drafters.gone.GoneDrafter"),
            r"drafter class 'specauf\.drafters\.gone\.GoneDrafter' cannot be imported .*Fix: install",
        ),
        (
            lambda c: c["specauf"].update(drafter_class="torch.nn.Linear"),
            "'torch.nn.Linear' is not a specauf drafter",
        ),
    ],
    ids=["no-settings", "no-weights", "unknown-class", "not-a-drafter"],
)
def test_incomplete_checkpoints_are_refused(tmp_path, target, drafter, edit, message):
    path = edited(save_checkpoint(tmp_path / "last.ckpt", target, drafter), edit)
    with pytest.raises(CheckpointError, match=message):
        load_drafter(path)


def test_weights_of_another_backbone_are_one_line(tmp_path, target, drafter):
    def as_domino(checkpoint):  # a DFlash run's weights under Domino's name
        checkpoint["specauf"]["drafter_class"] = "specauf.drafters.domino.DominoDrafter"
        checkpoint["specauf"]["drafter_config"].update(vocab_size=target.vocab_size)

    path = edited(save_checkpoint(tmp_path / "last.ckpt", target, drafter), as_domino)
    for load in (load_drafter, partial(load_with_target, target=target)):
        with pytest.raises(CheckpointError) as err:
            load(path)
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: the weights do not fit the DominoDrafter its config describes: ")
        assert "missing (e.g. gru." in message and "Fix: load it with the specauf version" in message


def test_load_weights_names_missing_unexpected_and_reshaped(target, drafter):
    fresh = DFlashDrafter.from_target(target, num_layers=1, block_size=4)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    state = dict(drafter.state_dict())
    state.pop("norm.weight")
    state["extra.weight"] = torch.zeros(1)
    state["fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as err:
        load_weights(fresh, state, "src")
    assert str(err.value).startswith(
        "src: the weights do not fit the DFlashDrafter its config describes: 1 missing (e.g. norm.weight), "
        "1 unexpected (e.g. extra.weight), 1 of another shape (e.g. fc.weight). Fix:"
    )
    # Nothing was half-loaded.
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in before.items())
    load_weights(fresh, dict(drafter.state_dict()), "src")
    assert_same_weights(fresh, drafter)


# --- the target ---------------------------------------------------------------------------------------------


def test_target_problems(target, drafter):
    meta = {
        "drafter_config": dict(drafter.config),
        "target_name": target.name,
        "target_layer_ids": list(target.layer_ids),
        "target_vocab_size": target.vocab_size,
    }
    assert target_problems(meta, target) == []
    assert target_problems({}, target) == []  # nothing recorded: nothing compared
    (name,) = target_problems(meta, tiny_random(**{**TINY_TARGET, "seed": 1}))
    assert name == f"target {target.name!r} (this target: {target.name.replace('seed0', 'seed1')!r})"
    assert target_problems(meta, tiny_random(**TINY_TARGET, layer_ids=[0])) == [
        "target layers [1] (this target: [0])"
    ]
    wider = target_problems(meta, tiny_random(**{**TINY_TARGET, "hidden_size": 48}))
    assert "hidden size 32 (this target: 48)" in wider
    no_mask_row = tiny_random(**TINY_TARGET, with_mask_token=False)  # 259 rows: the mask token's row is gone
    problems = target_problems({**meta, "target_name": no_mask_row.name}, no_mask_row)
    assert problems == [
        "mask token 259 (outside this target's 259-row embedding)",
        "vocabulary 260 (this target: 259)",
    ]


def test_check_target_refuses_another_target(ckpt, target):
    _, meta = load_drafter(ckpt)
    check_target(meta, target)
    with pytest.raises(CheckpointError) as err:
        load_with_target(ckpt, target=tiny_random(**{**TINY_TARGET, "seed": 1}))
    assert str(err.value).startswith(
        f"{ckpt}: the drafter was trained for another target: target 'tiny_random"
    )
    with pytest.raises(
        CheckpointError, match=r"target layers \[1\] \(this target: \[0\]\)\. Fix: use it with"
    ):
        load_with_target(ckpt, target=tiny_random(**TINY_TARGET, layer_ids=[0]))


# --- one message for one corrupt file, whoever reads it ----------------------------------------------------


def _readers(target, drafter):
    return {
        "load_drafter": load_drafter,
        "load_with_target": lambda p: load_with_target(p, target=target),
        "check_resumable": lambda p: check_resumable(p, drafter, target),
        "AtomicCheckpointIO": AtomicCheckpointIO().load_checkpoint,
    }


def _messages(path: Path, target, drafter) -> dict[str, str]:
    messages = {}
    for name, read in _readers(target, drafter).items():
        with pytest.raises(CheckpointError) as err:
            read(path)
        messages[name] = str(err.value)
    return messages


def _good_bytes(target, drafter) -> bytes:
    buffer = io.BytesIO()
    module = DrafterModule(drafter, target, AUF(), partial(torch.optim.AdamW), run_config={})
    checkpoint = {"state_dict": module.state_dict(), "optimizer_states": [], "loops": {}}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("damage", ["cut-in-half", "cut-after-the-header", "zip-magic-only"])
def test_a_corrupt_checkpoint_reads_the_same_everywhere(tmp_path, target, drafter, damage):
    good = _good_bytes(target, drafter)
    data = {
        "cut-in-half": good[: len(good) // 2],
        "cut-after-the-header": good[:100],
        "zip-magic-only": b"PK\x03\x04 half a zip file",
    }[damage]
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    path.write_bytes(data)
    messages = _messages(path, target, drafter)
    assert len(set(messages.values())) == 1, messages
    message = messages["load_drafter"]
    assert message.startswith(f"cannot read checkpoint {path}: the file is corrupt or truncated (")
    # A run directory names the same file, so the message is the same again.
    assert _messages(tmp_path, target, drafter)["load_drafter"] == message


def test_a_checkpoint_that_is_not_a_zip_reads_the_same_everywhere(tmp_path, target, drafter):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"\x00" * 64)
    messages = _messages(path, target, drafter)
    assert len(set(messages.values())) == 1, messages


def test_a_checkpoint_that_is_not_a_zip_has_the_same_headline_everywhere(tmp_path, target, drafter):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"\x00" * 64)
    for name, message in _messages(path, target, drafter).items():
        assert message.startswith(f"cannot read checkpoint {path}: the file is corrupt or truncated ("), name
        assert message.endswith("Fix: use another checkpoint of the run (resume=<file.ckpt> or an earlier step), "
                                "or re-run the training"), name  # fmt: skip
