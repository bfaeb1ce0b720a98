"""DP-LoRA throughput and memory on a Gemma 3 27B-shaped model (MedGemma 27B text's shape), on
one CUDA GPU: logical Poisson batches of hundreds of notes in physical batches that fit memory.

    python benchmarks/gpu_lora.py [--layers 62] [--batch 256] [--physical 8] [--seq-len 128]
                                  [--records 1024] [--steps 3] [--rank 8]
                                  [--targets q_proj,v_proj] [--no-dp] [--smoke]

The model is ``Gemma3ForCausalLM`` built from a ``Gemma3TextConfig`` with the 27B's sizes
(hidden 5,376, 62 layers of 32 query / 16 key-value heads of 128, MLP 21,504, vocabulary
262,208, five sliding-window layers to one global one) and random bf16 weights, made directly on
the GPU (nothing is downloaded; ``--layers N`` cuts the depth for a smaller GPU). FFA-LoRA
(``common.text.lora.add_lora``) goes on ``--targets``; ``LoraTrainer`` runs DP-SGD (Opacus hooks,
noise multiplier 1) on ``--records`` random token rows of ``--seq-len`` tokens (half prompt, half
target), Poisson-sampled at an expected logical batch of ``--batch`` and processed in physical
batches of ``--physical`` rows: one noisy step per logical batch. One untimed step warms up; then
``--steps`` timed steps.

Printed: tokens/s (rows actually processed x seq len, counted at the embedding), seconds per
logical step, peak GPU memory (allocated and reserved), and MFU = 6 N tokens/s / 989 TFLOP/s
(H200/H100 SXM bf16 dense peak) with N every parameter of the built model: the standard
forward+backward estimate. With the base frozen the backward pass computes no weight gradients,
so the work really done is nearer 4 N per token; the 6 N figure is the comparable convention.

Without CUDA it refuses with exit code 2 (``--smoke`` instead runs the same code on the CPU with
a 2-layer model of toy widths, to check the script itself). Not run in the development sessions
(no GPU lent): docs/narratives.md's memory figures for MedGemma 27B stay estimates until it is.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from common.privacy.budget import PrivacyBudget
from common.tabular.trainer import TrainSettings
from common.text.lora import LoraSettings, add_lora, get_adapter_weights, trainable_adapter
from common.text.tokens import TokenPairs
from common.text.trainer import LoraTrainer

PEAK_BF16_FLOPS = 989e12  # H200 (and H100 SXM) bf16 dense tensor-core peak
GEMMA3_27B = {"hidden_size": 5376, "num_hidden_layers": 62, "num_attention_heads": 32,
              "num_key_value_heads": 16, "head_dim": 128, "intermediate_size": 21504,
              "vocab_size": 262208, "query_pre_attn_scalar": 168, "sliding_window": 1024,
              "max_position_embeddings": 131072}
SMOKE = {**GEMMA3_27B, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 16, "intermediate_size": 128, "vocab_size": 1024, "query_pre_attn_scalar": 16}
SLIDING_PATTERN = 6  # every sixth layer attends globally, the others in a sliding window


def layer_types(n_layers: int) -> list[str]:
    return ["full_attention" if (i + 1) % SLIDING_PATTERN == 0 else "sliding_attention"
            for i in range(n_layers)]


def build_model(sizes: dict, n_layers: int, device: torch.device, dtype: torch.dtype,
                attn: str) -> torch.nn.Module:
    """Random weights, allocated and initialised on ``device`` in ``dtype`` (no CPU copy)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**{**sizes, "num_hidden_layers": n_layers},
                              layer_types=layer_types(n_layers), pad_token_id=0, eos_token_id=1,
                              bos_token_id=2, attn_implementation=attn)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = Gemma3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.to(device=device, dtype=dtype)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=GEMMA3_27B["num_hidden_layers"])
    parser.add_argument("--batch", type=int, default=256, help="expected logical Poisson batch")
    parser.add_argument("--physical", type=int, default=8, help="rows per forward/backward")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--records", type=int, default=1024, help="rows to sample from")
    parser.add_argument("--steps", type=int, default=3, help="timed logical steps")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q_proj,v_proj")
    parser.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager)")
    parser.add_argument("--no-dp", action="store_true", help="plain Adam on the same batches")
    parser.add_argument("--smoke", action="store_true",
                        help="toy widths on the CPU: checks the script, measures nothing")
    args = parser.parse_args(argv)
    if args.seq_len < 2 or min(args.layers, args.batch, args.physical, args.records, args.steps) < 1:
        parser.error("--seq-len must be >= 2 and the other sizes >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.smoke:
        device, dtype, sizes = torch.device("cpu"), torch.float32, SMOKE
        args.layers = min(args.layers, 2)
    elif not torch.cuda.is_available():
        print("gpu_lora.py needs a CUDA GPU (a 27B-shaped model in bf16 is ~54 GB of weights); "
              "none is visible to torch here. Run it on a GPU machine (--layers N for a smaller "
              "one), or --smoke to check the script on the CPU.", file=sys.stderr)
        return 2
    else:
        device, dtype, sizes = torch.device("cuda"), torch.bfloat16, GEMMA3_27B
        torch.backends.cuda.matmul.allow_tf32 = True

    start = time.perf_counter()
    base = build_model(sizes, args.layers, device, dtype, args.attn)
    n_params = sum(p.numel() for p in base.parameters())
    embedding = base.get_input_embeddings().weight.numel()
    model = add_lora(base, LoraSettings(r=args.rank, target_modules=tuple(args.targets.split(","))))
    adapter = trainable_adapter(model)
    n_trainable = sum(p.numel() for p in adapter.values())
    with torch.no_grad():  # B starts at zero; a random B makes the step's gradients non-trivial
        for p in adapter.values():
            p.normal_(0, 1e-3)
    built_s = time.perf_counter() - start

    rng = np.random.default_rng(0)
    tokens = rng.integers(3, sizes["vocab_size"], size=(args.records, args.seq_len), dtype=np.int64)
    pairs = TokenPairs(tokens, prompt_width=args.seq_len // 2)
    dp = {} if args.no_dp else {"noise_multiplier": 1.0,
                                "budget": PrivacyBudget(1e9, 1e-5, "gpu-benchmark")}
    trainer = LoraTrainer(model, pairs, pad_id=0,
                          settings=TrainSettings(batch_size=args.batch, lr=1e-3, max_grad_norm=1.0),
                          device=str(device), seed=0, physical_batch_size=args.physical, **dp)
    rows: list[int] = []
    model.get_input_embeddings().register_forward_hook(lambda _m, a, _o: rows.append(len(a[0])))

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    before = get_adapter_weights(model)
    trainer.train_steps(1)  # warm-up: kernels, allocator, Adam state
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows.clear()
    start = time.perf_counter()
    loss = trainer.train_steps(args.steps)
    synchronize()
    seconds = time.perf_counter() - start
    after = get_adapter_weights(model)
    moved = sum(not np.array_equal(before[n], after[n]) for n in before)

    n_tokens = sum(rows) * args.seq_len
    tokens_s = n_tokens / seconds
    shape = "toy widths (--smoke)" if args.smoke else "Gemma 3 27B shape"
    print(f"model: {shape}, {args.layers} layers, {n_params / 1e9:.3g} B parameters "
          f"({embedding / 1e9:.3g} B embedding), {str(dtype).removeprefix('torch.')} on "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; built in "
          f"{built_s:.0f} s")
    print(f"adapter: FFA-LoRA r={args.rank} on {args.targets}, {n_trainable / 1e6:.3g} M trained; "
          f"{moved} of {len(before)} B matrices moved")
    print(f"training: {'no DP' if args.no_dp else 'DP-SGD (sigma 1)'}, logical batch ~{args.batch} "
          f"(q = {trainer.sample_rate:.4g}), physical {args.physical}, seq len {args.seq_len}; "
          f"{args.steps} steps, {sum(rows)} rows in {len(rows)} physical batches, "
          f"loss {loss:.3f}")
    print(f"throughput: {tokens_s:,.0f} tokens/s, {seconds / args.steps:.2f} s per logical step")
    if device.type == "cuda":
        gib = 2 ** 30
        print(f"memory: peak allocated {torch.cuda.max_memory_allocated() / gib:.1f} GiB, "
              f"peak reserved {torch.cuda.max_memory_reserved() / gib:.1f} GiB")
        print(f"MFU: {6 * n_params * tokens_s / PEAK_BF16_FLOPS:.1%} "
              f"(6 N tokens/s over {PEAK_BF16_FLOPS / 1e12:.0f} TFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
