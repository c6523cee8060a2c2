"""Milliseconds of one causal attention, forward + backward, on this CPU: SDPA's backends
against the written-out attention of ``tfnewton.models.gpt2.CausalSelfAttention``.

Why the model writes its attention out on a CPU: at the prompt lengths of in-context
regression (tens of tokens) the CPU flash kernel's per-block overhead dominates and its bf16
backward is several times slower still, while the "math" backend (the same arithmetic as
ours) spends its time building and checking the causal mask on every call. SDPA gets q, k
and v as strided views of one fused projection (as Hugging Face's GPT-2 does); ours copies
them once to head-major order, as the model does, and that copy is included in its time.

    python benchmarks/attention_backends.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {  # (batch, heads, tokens, head size)
    "small recipe (4 heads x 22 tokens, hs 16)": (64, 4, 22, 16),
    "Fu et al. (8 heads x 82 tokens, hs 32)": (64, 8, 82, 32),
}
BACKENDS = {"SDPA flash (CPU default)": SDPBackend.FLASH_ATTENTION, "SDPA math": SDPBackend.MATH,
            "tfnewton (baddbmm, softmax, bmm)": None}


def time_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def fwd_bwd(shape, dtype, backend):
    B, nh, T, hs = shape
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, T, 3 * nh * hs, generator=g, dtype=dtype).requires_grad_()
    grad = torch.randn(B, nh, T, hs, generator=g, dtype=dtype)

    causal_bias = torch.full((T, T), float("-inf"), dtype=dtype).triu_(1)

    def run():
        if backend is None:  # CausalSelfAttention.forward's CPU path
            q, k, v = qkv.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
            scores = torch.baddbmm(causal_bias, q.view(B * nh, T, hs), k.view(B * nh, T, hs).transpose(1, 2),
                                   alpha=hs ** -0.5)
            out = torch.bmm(scores.softmax(dim=-1), v.view(B * nh, T, hs)).view(B, nh, T, hs)
        else:
            q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in qkv.split(nh * hs, dim=2))
            with sdpa_kernel([backend]):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out, torch.autograd.grad(out, qkv, grad)[0]

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median ms, forward + backward")
    print("| shape (batch 64) | dtype | " + " | ".join(BACKENDS) + " |")
    print("|---|---|" + "---|" * len(BACKENDS))
    for name, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            ms = [time_ms(fwd_bwd(shape, dtype, b), args.repeats) for b in BACKENDS.values()]
            print(f"| {name} | {str(dtype).removeprefix('torch.')} | " + " | ".join(f"{m:.2f}" for m in ms) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
