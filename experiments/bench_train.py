"""Training-step speed of a drafter: ms per sample, achieved TFLOP/s, MFU and peak memory.

    python -m experiments.bench_train --shape qwen3_8b --backbone dflash --batch 2 4 8     (GPU)
    python -m experiments.bench_train --shape smollm2_135m --backbone domino --batch 2      (GPU or CPU)
    python -m experiments.bench_train --shape smollm2_135m --batch 8 --loss decay auf lk     (each loss's step)
    python -m experiments.bench_train --shape qwen3_8b --with-target --batch 2 4 8          (GPU: the full step)

One step = drafter forward over packed blocks, the chunked LM-head cross-entropy, the loss, backward and an
AdamW step (`--no-optimizer`: forward and backward only, which is what SpecForge's benchmark times), under the decay loss (or each `--loss`, a conf/loss name) — what DrafterModule does per batch minus the target forward: as in the field's trainer's own
benchmark, the target's features are random tensors of the right shape and the weights are random. The
reference shapes (`qwen3_8b`) are a Qwen3-8B-shaped drafter: 5 layers, hidden 4096, 32/8 heads, MLP 12288,
vocab 151,936, B=16, sequence 768, 256 anchors per sequence.

FLOPs are counted analytically as the useful work of the step (matmuls ×2 for multiply-add; backward = 2×
forward for trainable layers, 1× for the frozen head, whose weight needs no gradient; attention over the
visible keys only). Recomputation (the head's backward recomputes its logits) is not counted as useful, so
MFU here is model-FLOPs utilisation. Peak is the H100 SXM bf16 dense figure, 989.5 TFLOP/s.

`--with-target` (qwen3_8b shapes) puts a Qwen3-8B-shaped target with random weights in the loop, as a real
run has it: the features come from its forward over the batch (no gradient), so the step is what
DrafterModule does per batch. The target forward is also timed alone, for its share; TFLOP/s and MFU still
count the drafter's work only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from specauf.data.blocks import collate_blocks, pad_blocks, sample_anchors
from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.losses import BaseAnchoredCurriculum, CrossEntropy

H100_BF16_PEAK = 989.5e12


@dataclass
class Shape:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    vocab: int
    layers: int = 5
    feature_layers: int = 5
    block_size: int = 16
    seq_len: int = 768
    anchors: int = 256


SHAPES = {
    "qwen3_8b": Shape(hidden=4096, heads=32, kv_heads=8, head_dim=128, mlp=12288, vocab=151_936),
    "smollm2_135m": Shape(
        hidden=576, heads=9, kv_heads=3, head_dim=64, mlp=1536, vocab=49_152, seq_len=512, anchors=64
    ),
}


def build(shape: Shape, backbone: str, device: torch.device) -> torch.nn.Module:
    common = dict(
        hidden_size=shape.hidden, num_heads=shape.heads, num_kv_heads=shape.kv_heads, head_dim=shape.head_dim,
        intermediate_size=shape.mlp, num_feature_layers=shape.feature_layers, num_layers=shape.layers,
        block_size=shape.block_size, rope_theta=1e6, mask_token_id=shape.vocab - 1,
    )  # fmt: skip
    if backbone == "domino":
        return DominoDrafter(vocab_size=shape.vocab, gru_size=shape.hidden // 4, rank=256, **common).to(
            device
        )
    return DFlashDrafter(**common).to(device)


def make_batch(shape: Shape, batch: int, label_offset: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(batch):
        ids = torch.randint(0, shape.vocab, (shape.seq_len,), generator=g)
        # chat-like: the second half of the sequence is the assistant's
        mask = torch.zeros(shape.seq_len, dtype=torch.bool)
        mask[shape.seq_len // 4 :] = True
        items.append({"input_ids": ids, "loss_mask": mask, "anchors": sample_anchors(mask, shape.anchors, g)})
    return collate_blocks(items, shape.block_size, label_offset, pad_id=0)


def step_flops(shape: Shape, batch: dict[str, torch.Tensor], backbone: str) -> float:
    """Useful FLOPs of one training step (see the module docstring for the convention)."""
    b, s = batch["input_ids"].shape
    n_blocks = int((batch["anchors"] >= 0).sum())
    q_tokens = n_blocks * shape.block_size
    h, kv = shape.hidden, shape.kv_heads * shape.head_dim
    qo = shape.heads * shape.head_dim
    fwd = 2 * b * s * shape.feature_layers * h * h  # fusion fc
    per_layer_tok = 2 * (h * qo * 2 + h * kv * 2 + 3 * h * shape.mlp)
    fwd += shape.layers * (q_tokens * per_layer_tok + 2 * b * s * h * kv * 2)  # + context k/v
    visible = (batch["anchors"].clamp_min(0).sum().item() + n_blocks * shape.block_size) * shape.block_size
    fwd += shape.layers * 2 * 2 * visible * qo  # QK^T and PV over visible keys
    rows = int(batch["valid"].sum())
    head = 2 * rows * h * shape.vocab
    trainable = 3 * fwd  # forward + backward (inputs and weights)
    total = trainable + head + head  # head forward + gradient wrt its input (frozen weight)
    if backbone == "domino":
        gru = shape.hidden // 4
        extra = 2 * rows * (3 * (h * gru + gru * gru) + (h + gru) * 256 + 256 * shape.vocab)
        # + head: the final branch's logits over the frozen head, counted as a second pass as an unfused
        # Domino runs it (the fused head shares z·W between the branches), so MFU stays comparable.
        total += 3 * extra + head
    return float(total)


def run(
    shape_name: str,
    backbone: str,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    profile: int = 0,
    loss: str | None = None,
    target: Any = None,
    optimizer: bool = True,
) -> dict:
    shape = SHAPES[shape_name]
    torch.manual_seed(0)
    drafter = build(shape, backbone, device)
    # The frozen target head and embedding in the precision they run in: bf16 on GPU, fp32 on CPU.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if target is None:
        lm_head = (torch.randn(shape.vocab, shape.hidden, device=device) * 0.02).to(dtype)
        embed_table = torch.nn.Embedding(shape.vocab, shape.hidden, device=device, dtype=dtype)
        embed_table.requires_grad_(False)
    else:
        lm_head, embed_table = target.lm_head_weight, target.embed
    opt = torch.optim.AdamW(drafter.parameters(), lr=1e-4, fused=device.type == "cuda")
    # Decay (dense gradients): the FLOP count below is exact for it. AUF is faster still (the head's backward
    # skips rows outside the support), so counting its FLOPs the same way would overstate them.
    loss_fn = CrossEntropy(gamma=7.0) if loss is None else _conf_loss(loss, shape.block_size)
    batch = {k: v.to(device) for k, v in make_batch(shape, batch_size, drafter.label_offset).items()}
    multiple = 128 if device.type == "cuda" else 1
    batch = pad_blocks(batch, shape.block_size, multiple)
    b, s = batch["input_ids"].shape
    random_features = torch.randn(b, s, shape.feature_layers * shape.hidden, device=device, dtype=dtype)

    def features() -> torch.Tensor:
        return random_features if target is None else target.features(batch["input_ids"])

    # What the drafter borrows from a target: here random stand-ins in the target's precision.
    frozen = SimpleNamespace(embed=embed_table, lm_head_weight=lm_head)
    curriculum = BaseAnchoredCurriculum()  # λ = 0.5 at progress 0.5: both Domino branches train
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def one_step() -> float:
        with autocast:
            preds = drafter.training_predictions(batch, features(), frozen)
            loss = curriculum(loss_fn, preds, 0.5)[0]
        loss.backward()
        if optimizer:
            torch.nn.utils.clip_grad_norm_(drafter.parameters(), 1.0)
            opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        loss_value = one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    target_seconds = _time_alone(features, steps, device) if target is not None else 0.0
    flops = step_flops(shape, batch, backbone)
    if profile:
        _print_profile(one_step, device, profile)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {
        "shape": shape_name,
        "backbone": backbone,
        "loss": loss or "decay",
        "optimizer": optimizer,
        "batch": batch_size,
        "ms_per_step": seconds * 1e3,
        "ms_per_sample": seconds * 1e3 / batch_size,
        "tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / H100_BF16_PEAK,
        "peak_gib": peak,
        "loss_value": float(loss_value.detach()),
        "target_ms_per_step": target_seconds * 1e3,
    }


def _time_alone(fn: Any, steps: int, device: torch.device) -> float:
    """Seconds per call of `fn`, alone (after one untimed call)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _conf_loss(name: str, block_size: int) -> torch.nn.Module:
    """The loss `python -m specauf.train loss=<name>` builds for blocks of `block_size`."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from specauf.config import register_resolvers

    register_resolvers()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("train", overrides=[f"loss={name}", f"backbone.block_size={block_size}"])
    return instantiate(cfg.loss)


def _print_profile(one_step, device: torch.device, rows: int) -> None:
    """Where one step's time goes: the `rows` most expensive kernels (ops on CPU) over two profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            one_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3_8b")
    parser.add_argument("--backbone", choices=["dflash", "domino"], nargs="+", default=["dflash", "domino"])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also print the N most expensive kernels of a step",
    )
    parser.add_argument(
        "--loss", nargs="+", default=[None], help="conf/loss names, each timed in turn (default: decay)"
    )
    parser.add_argument(
        "--with-target", action="store_true", help="a Qwen3-8B-shaped random target computes the features"
    )
    parser.add_argument(
        "--no-optimizer",
        action="store_true",
        help="forward and backward only, as SpecForge's bench_domino_mfu.py times it (no clipping, no AdamW "
        "step, so no optimizer state in the peak)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.with_target and args.shape != "qwen3_8b":
        parser.error("--with-target builds a Qwen3-8B-shaped target: use it with --shape qwen3_8b")
    device = torch.device(args.device)
    print(
        f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}"
    )
    target = None
    if args.with_target:
        from specauf.target import qwen3_8b_random

        target = qwen3_8b_random(str(device))
        print("with a Qwen3-8B-shaped random target in the loop (bf16); target ms = its forward alone")
    extra = f"{'target ms':>11}{'share':>7}" if target is not None else ""
    print(
        f"{'shape':<14}{'backbone':<9}{'loss':<18}{'batch':>6}{'ms/step':>10}{'ms/sample':>11}{'TFLOP/s':>9}{'MFU':>7}{'peak GiB':>10}{extra}"
    )
    runs = [(b, bs, loss) for b in args.backbone for bs in args.batch for loss in args.loss]
    for backbone, bs, loss in runs:
        try:
            r = run(
                args.shape, backbone, bs, args.steps, args.warmup, device, args.profile, loss, target,
                optimizer=not args.no_optimizer,
            )  # fmt: skip
        except torch.OutOfMemoryError:
            print(f"{args.shape:<14}{backbone:<9}{loss or 'decay':<18}{bs:>6}  out of memory", flush=True)
            torch.cuda.empty_cache()
            continue
        print(
            f"{r['shape']:<14}{r['backbone']:<9}{r['loss']:<18}{r['batch']:>6}{r['ms_per_step']:>10.1f}{r['ms_per_sample']:>11.1f}"
            f"{r['tflops']:>9.1f}{r['mfu']:>7.1%}{r['peak_gib']:>10.1f}"
            + (
                f"{r['target_ms_per_step']:>11.1f}{r['target_ms_per_step'] / r['ms_per_step']:>7.0%}"
                if target is not None
                else ""
            ),
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
