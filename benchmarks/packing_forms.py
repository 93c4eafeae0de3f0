"""Benchmark: one pack's training step as stacked batched matmuls (packing.py) vs torch.func vmap.

Both forms run the same step for M pooled heads (pooler: dense + tanh, the given dropout masks,
linear; last-linear: masks, linear), forward + backward + one Adam step over the stacked
parameters, on random features (speed does not depend on their values), one torch thread. The
vmap form maps `torch.func.functional_call` of the module's own layers over the member axis; the
masks are passed in as in packing.py, since vmap cannot give each member its own generator.
It also checks that both forms compute the same logits.

    python benchmarks/packing_forms.py [--members 15] [--steps 300] [--hidden 384]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=15)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from raysweep.packing import _Stack

    m, b, h, c = args.members, args.batch, args.hidden, 5
    print(f"{m} members, batch {b}, hidden {h}, {args.steps} steps, 1 thread; ms per step (median of 3 runs)")
    print(f"{'freeze':<13}{'baddbmm':>10}{'vmap':>10}{'vmap / baddbmm':>16}")
    for freeze in ("last-linear", "pooler"):
        torch.manual_seed(0)
        dense = nn.Linear(h, h) if freeze == "pooler" else None
        linear = nn.Linear(h, c)
        heads = [type("Head", (), {"dense": dense, "linear": linear})() for _ in range(m)]
        x = torch.randn(m, b, h)
        masks = (torch.rand(m, b, h) < 0.5).float() * 2
        y = torch.randint(0, c, (m, b))

        stack = _Stack(heads, torch.device("cpu"))

        def vmapped(params, x, mask):  # the stack stores the dense weight [in, out]: nn.Linear wants it [out, in]
            z = x
            if dense is not None:
                z = torch.tanh(torch.func.functional_call(dense, {"weight": params[0].T, "bias": params[1]}, (z,)))
            return torch.func.functional_call(linear, {"weight": params[-2], "bias": params[-1]}, (z * mask,))

        forms = {"baddbmm": lambda: stack.forward(x, masks),
                 "vmap": lambda: torch.func.vmap(vmapped)(stack.parameters(), x, masks)}
        torch.testing.assert_close(forms["vmap"](), forms["baddbmm"](), rtol=1e-5, atol=1e-5)
        times = {}
        for name, forward in forms.items():
            runs = []
            for _ in range(3):
                opt = torch.optim.Adam(stack.parameters(), lr=1e-3)
                start = time.perf_counter()
                for _ in range(args.steps):
                    loss = F.cross_entropy(forward().reshape(m * b, c), y.reshape(-1), reduction="none")
                    opt.zero_grad(set_to_none=True)
                    loss.view(m, b).mean(1).sum().backward()
                    opt.step()
                runs.append((time.perf_counter() - start) / args.steps * 1e3)
            times[name] = sorted(runs)[1]
        print(f"{freeze:<13}{times['baddbmm']:>10.2f}{times['vmap']:>10.2f}{times['vmap'] / times['baddbmm']:>15.2f}x")


if __name__ == "__main__":
    with measurement("Packed training: stacked matmuls vs vmap"):
        main()
