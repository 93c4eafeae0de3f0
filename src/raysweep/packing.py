"""Packed training: several cells of one freeze mode trained as one stacked model.

A last-linear head (384 x 5) trained alone is almost all per-step overhead: Python, the
optimizer loop and a dozen kernel launches around microseconds of arithmetic. Cells that share
a freeze mode, the same cached activations and the same number of training rows (every strategy
x seed at one fraction, and the scoring models of every seed) can instead train together: each
layer becomes one batched matmul over a stack of per-member weights, and one optimizer step
updates every member.

Each member follows exactly the path it would alone (`model.build_model` + `model.fit`):

- its initial weights come from `build_model` itself (global seed = the member's seed);
- its dropout masks come from its own CPU generator, which starts where `build_model` left the
  global generator, and is drawn with the call the solo path makes (`empty_like(x).bernoulli_(1-p)`
  on a [batch, hidden] tensor, then `div_(1-p)`), so it sees the same masks in the same order;
- its batch order comes from its own `torch.Generator().manual_seed(seed * 1_000_003 + 2)`,
  through `batch_order`, as in `model._optimise`;
- its loss is its own batch mean; the pack backpropagates the sum of the members' losses, so each
  member's gradient is exactly its own;
- Adam and StepLR are element-wise, so one optimizer over the stacked parameters takes each
  member's own step.

So packed and solo training reach the same weights up to float32 reduction order (a batched
matmul may sum in another order than a single one) and the same metrics: tests/test_packing.py
checks both for every pooled mode. A member whose loss turns NaN or infinite fails alone: its
slice of every stacked tensor is its own, so the others go on and its result carries the error.

Token-level modes (`last-attention`, `top-K`, LoRA) are not packed: their dropout runs inside
the encoder layer's own code, their batches are padded to each member's own lengths (the batch
shapes differ between members at the same step), and on a CPU one such layer already keeps the
cores busy. See docs/packing.md.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from raysweep.backbone import Classifier
from raysweep.config import RecipeConfig
from raysweep.embed import Activations
from raysweep.freeze import FreezeMode
from raysweep.tasks import Task


def batch_order(n: int, batch_size: int, generator: torch.Generator, lengths: np.ndarray | None = None):
    """Shuffled minibatches of positions 0..n-1: the batch order of solo and packed training alike.

    With `lengths` (token-level training), rows are grouped by length the way Hugging Face's
    `group_by_length` does: shuffle, sort within windows of 50 batches, shuffle the batches.
    Padding then costs little, which halves an epoch of last-attention on SST's short sentences.
    """
    order = torch.randperm(n, generator=generator)
    if lengths is None:
        batches = [order[s: s + batch_size] for s in range(0, n, batch_size)]
        yield from batches
        return
    window = batch_size * 50
    batches = []
    for s in range(0, n, window):
        chunk = order[s: s + window]
        chunk = chunk[np.argsort(-lengths[chunk.numpy()], kind="stable")]
        batches.extend(chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size))
    for i in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[i]


def recipe_optimizer(params: list[torch.nn.Parameter], recipe: RecipeConfig):
    """The recipe's Adam and its StepLR schedule over `params`: what every training, solo or
    packed, optimises with (`model._optimise`, `_optimise_packed`).

    `fused=True`: one vectorised pass over each parameter, its gradient and its two moments per
    step. PyTorch's default on a CPU is the single-tensor form: about seven passes, each making a
    new tensor; on a packed pooler's stacked [M, 384, 384] dense it took longer than the matmuls
    (docs/packing.md). The fused kernel computes the same update in another float32 operation
    order: after the study's 50 epochs the weights differ from the single-tensor form's by at most
    1.5e-7 and every prediction is the same (docs/measurements.md). Adam stays element-wise, so a
    stack still takes each member's own step.
    """
    optimizer = torch.optim.Adam(params, lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay,
                                 fused=True)
    # StepLR counts epochs: the study halves the learning rate every 20 of its 50 epochs.
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    return optimizer, scheduler


@dataclass
class Member:
    """One training of a pack: a cell's (or a scoring model's) rows, labels and seed."""

    rows: np.ndarray  # positions into the pack's activations
    labels: np.ndarray  # one per row
    seed: int  # the cell's seed: initialisation + dropout stream, batch-order stream
    # None: the boundary says it all. A mode that is not `packable` (LoRA) trains alone.
    freeze: FreezeMode | None = None
    task: Task | None = None  # what is learnt (tasks.py); None: classification. Packs learn classes only.


@dataclass
class StackedResult:
    """What the solo path would have produced for one member."""

    model: Classifier  # trained, on the pack's device, exactly as build_model + fit leave it
    final_loss: float  # the last epoch's mean loss (model.fit's return value)
    error: str | None = None  # why this member failed (it diverged); None when it trained


def packable(acts: Activations, freeze: FreezeMode | None = None, task: Task | None = None) -> bool:
    """Whether trainings over `acts` can be packed: pooled freeze modes (last-linear, pooler) of a
    classification (the stacked loss is cross-entropy; a regression trains alone)."""
    stackable = freeze is None or freeze.packable
    return not acts.boundary.ragged and stackable and not (task is not None and task.regression)


class _Stack:
    """The trainable layers of M pooled classifiers, stacked on a leading member axis.

    Mirrors `Classifier.forward` for a pooled boundary: [dense + tanh] -> dropout -> linear.

    Each layer is laid out so that its weight's gradient is one product born in the weight's own
    layout (written by hand in `losses_and_grads`, and through autograd for `forward`). `bmm`'s
    backward computes a weight's gradient as one product and, unlike `mm`'s, never swaps the
    operands to match the weight's strides: a weight used through a transposed view got a
    transposed gradient, which the optimizer step then copied contiguous (4.7 MB for 8 pooler
    members, every step). So the dense weight is stored transposed,
    [M, in, out] (x @ W), and the head keeps nn.Linear's [M, C, H] and computes its logits
    transposed (W @ x^T): its gradient is then g^T @ x, which is also the fast form of that thin
    product (a [M, H, C] gradient x^T @ g took 5x longer; docs/packing.md).
    """

    def __init__(self, models: list[Classifier], device: torch.device):
        def stacked(tensors):
            return torch.nn.Parameter(torch.stack([t.detach() for t in tensors]).to(device))

        self.dense_w = self.dense_b = None
        if models[0].dense is not None:
            self.dense_w = stacked([m.dense.weight.T for m in models])  # [M, in, out]: nn.Linear's, transposed
            self.dense_b = stacked([m.dense.bias for m in models])  # [M, H]
        self.linear_w = stacked([m.linear.weight for m in models])  # [M, C, H]
        self.linear_b = stacked([m.linear.bias for m in models])  # [M, C]
        for p in self.parameters():  # written in place every step (losses_and_grads): 4.7 MB a step for 8 poolers
            p.grad = torch.zeros_like(p)

    def parameters(self) -> list[torch.nn.Parameter]:
        # The order model._optimise's Adam sees them in (dense before linear); Adam is
        # element-wise, so the order only has to be consistent.
        return [p for p in (self.dense_w, self.dense_b, self.linear_w, self.linear_b) if p is not None]

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """[M, B, H] features (and [M, B, H] scaled dropout masks, or None) -> [M, B, C] logits."""
        if self.dense_w is not None:
            x = torch.tanh(torch.baddbmm(self.dense_b.unsqueeze(1), x, self.dense_w))
        if masks is not None:
            x = x * masks  # what F.dropout computes on CPU: input * (bernoulli(1-p) / (1-p))
        return torch.baddbmm(self.linear_b.unsqueeze(2), self.linear_w, x.transpose(1, 2)).transpose(1, 2)

    @torch.no_grad()
    def losses_and_grads(self, x: torch.Tensor, masks: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        """One step's forward and backward, by hand: each member's batch-mean cross-entropy [M], and
        the gradient of their sum (each member's own: d(sum)/d(member's loss) = 1) written into
        every parameter's `.grad`, where `optimizer.step()` reads it.

        It is `forward` + `F.cross_entropy` + `backward()` with the same products and element-wise
        operations, so autograd's gradient up to float32 rounding (tests/test_packing.py checks
        it); without autograd's graph, which cost more than a last-linear step's arithmetic (a
        last-linear step of 8 members took 1.8x the CPU time through autograd; docs/packing.md).
        """
        batch = x.shape[1]
        h = x
        if self.dense_w is not None:
            h = torch.baddbmm(self.dense_b.unsqueeze(1), x, self.dense_w).tanh_()
        dropped = h * masks if masks is not None else h
        # Logits transposed, [M, C, B], as `forward` computes them (see the class's docstring).
        logp = torch.log_softmax(torch.baddbmm(self.linear_b.unsqueeze(2), self.linear_w, dropped.transpose(1, 2)), 1)
        target = labels.unsqueeze(1)  # [M, 1, B]
        losses = logp.gather(1, target).mean((1, 2)).neg_()
        # d(batch-mean cross-entropy)/d(logits) = (softmax - one-hot) / batch
        grad = logp.exp_().scatter_add_(1, target, torch.full(target.shape, -1.0, device=x.device)).div_(batch)
        torch.bmm(grad, dropped, out=self.linear_w.grad)  # [M, C, H]
        torch.sum(grad, 2, out=self.linear_b.grad)
        if self.dense_w is not None:
            grad = torch.bmm(grad.transpose(1, 2), self.linear_w)  # [M, B, H]: d/d(dropped)
            if masks is not None:
                grad.mul_(masks)
            grad = torch.ops.aten.tanh_backward(grad, h)  # grad * (1 - h^2), autograd's own kernel
            torch.bmm(x.transpose(1, 2), grad, out=self.dense_w.grad)  # [M, in, out]
            torch.sum(grad, 1, out=self.dense_b.grad)
        return losses

    def write_back(self, models: list[Classifier]) -> None:
        """Copy each member's trained slice into its own classifier."""
        with torch.no_grad():
            for i, m in enumerate(models):
                if self.dense_w is not None:
                    m.dense.weight.copy_(self.dense_w[i].T)
                    m.dense.bias.copy_(self.dense_b[i])
                m.linear.weight.copy_(self.linear_w[i])
                m.linear.bias.copy_(self.linear_b[i])


def _check(acts: Activations, members: list[Member]) -> int:
    if not members:
        raise ValueError("fit_packed: a pack needs at least one member")
    if not all(packable(acts, m.freeze, m.task) for m in members):
        raise ValueError(f"fit_packed: {acts.boundary.kind!r} activations (or a mode that trains alone, or a regression) cannot "
                         "be packed; "
                         "train token-level modes one by one (model.fit)")
    sizes = {len(m.rows) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"fit_packed: members must train on the same number of rows, got {sorted(sizes)}")
    for i, m in enumerate(members):
        if len(m.labels) != len(m.rows):
            raise ValueError(f"fit_packed: member {i} has {len(m.rows)} rows but {len(m.labels)} labels")
    return sizes.pop()


def train_stack(acts: Activations, members: list[Member], models: list[Classifier],
                dropout_streams: list[torch.Generator], recipe: RecipeConfig,
                device: str | torch.device | None = None) -> list[StackedResult]:
    """Train `models` (member i's freshly built classifier, and the generator its dropout masks
    come from) as one stacked model on `device`; `model.fit_packed` builds them as alone.

    Members share `acts` (a pooled boundary) and their number of rows; rows, labels and seeds
    may differ.
    """
    n = _check(acts, members)
    device = torch.device(device or "cpu")
    stack = _Stack(models, device)

    # One copy of every row any member uses; each member indexes it through its own positions.
    union, inverse = np.unique(np.concatenate([np.asarray(m.rows) for m in members]), return_inverse=True)
    x_all = acts.dense(union).to(device)
    positions = torch.from_numpy(inverse.reshape(len(members), n).astype(np.int64)).to(device)
    y = torch.from_numpy(np.stack([np.asarray(m.labels, dtype=np.int64) for m in members])).to(device)

    losses_by_epoch = _optimise_packed(stack, x_all, positions, y, recipe, [m.seed for m in members],
                                       dropout_streams, device)
    stack.write_back(models)
    results = []
    for i, model in enumerate(models):
        per_epoch = losses_by_epoch[:, i]
        bad = np.flatnonzero(~np.isfinite(per_epoch))
        error = None
        if len(bad):
            error = (f"training diverged: the mean loss was {per_epoch[bad[0]]} in epoch {bad[0] + 1} "
                     f"of {recipe.epochs} (seed {members[i].seed}, {n} rows)")
        results.append(StackedResult(model.to(device), float(per_epoch[-1]), error))
    return results


def dropout_masks(streams: list[torch.Generator], rows: int, cols: int, keep: float,
                  uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """[M, rows, cols] scaled dropout masks, member i's drawn from `streams[i]` exactly as F.dropout
    draws it on a CPU: `torch.empty(rows, cols).bernoulli_(keep, generator).div_(keep)`.

    On a CPU, `bernoulli_(p)` draws one float64 uniform per element and keeps `u < p`:
    `torch.rand(..., dtype=float64) < p` gives the same values and leaves the generator in the
    same state in about half the CPU time (the masks are most of a packed last-linear step), and
    one comparison serves the whole stack.
    tests/test_packing.py checks the two stay equal. `uniforms` ([M, >= rows, cols] float64) is
    a buffer to reuse.
    """
    if uniforms is None:
        uniforms = torch.empty(len(streams), rows, cols, dtype=torch.float64)
    uniforms = uniforms[:, :rows]
    for u, g in zip(uniforms, streams):
        torch.rand(rows, cols, dtype=torch.float64, generator=g, out=u)
    return (uniforms < keep).to(torch.float32).div_(keep)


# Steps whose features and dropout masks are gathered and drawn in one call per member: a call
# costs tens of microseconds before its first element, and a last-linear member's whole step is
# about a hundred. 8 x 32 rows of 384 float64 uniforms is 0.8 MB a member.
STEPS_AT_ONCE = 8


def _optimise_packed(stack: _Stack, x_all: torch.Tensor, positions: torch.Tensor, y: torch.Tensor,
                     recipe: RecipeConfig, seeds: list[int], dropout_streams: list[torch.Generator],
                     device: torch.device) -> np.ndarray:
    """`model._optimise` for a stack of members; returns each epoch's mean loss per member [E, M]."""
    members, n = positions.shape
    optimizer, scheduler = recipe_optimizer(stack.parameters(), recipe)
    order_gens = [torch.Generator().manual_seed(seed * 1_000_003 + 2) for seed in seeds]  # as model._optimise
    keep = 1 - recipe.dropout
    hidden = stack.linear_w.shape[2]
    uniforms = torch.empty(members, STEPS_AT_ONCE * recipe.batch_size, hidden, dtype=torch.float64)
    per_epoch = np.empty((recipe.epochs, members))
    for epoch in range(recipe.epochs):
        # Each member's batches of this epoch, drawn by batch_order from its own generator. With
        # the same n and batch size every member's k-th batch has the same length: the stack of
        # their concatenations splits into [M, B] batches.
        batches = [list(batch_order(n, recipe.batch_size, g)) for g in order_gens]
        order = torch.stack([torch.cat(b) for b in batches]).to(device)  # [M, n] positions into each member's rows
        rows, labels = positions.gather(1, order), y.gather(1, order)  # rows of x_all, labels: batch order
        sizes = [len(b) for b in batches[0]]
        total = torch.zeros(members, dtype=torch.float64, device=device)
        start = 0
        for first in range(0, len(sizes), STEPS_AT_ONCE):
            # What the next steps read and do not learn, prepared at once: their features and their
            # dropout masks. A stream draws its masks element after element, so one draw of the
            # steps' rows is their per-step draws back to back (tests/test_packing.py).
            group = sizes[first: first + STEPS_AT_ONCE]
            span = slice(start, start + sum(group))
            xs = x_all.index_select(0, rows[:, span].reshape(-1)).view(members, sum(group), -1)  # [M, rows, H]
            masks = None
            if recipe.dropout > 0:  # F.dropout draws nothing at p = 0
                # Drawn on the CPU from each member's stream whatever the device: the same masks everywhere.
                masks = dropout_masks(dropout_streams, sum(group), hidden, keep, uniforms).to(device)
            for batch in group:
                at = slice(start - span.start, start - span.start + batch)  # this step's rows in the group
                losses = stack.losses_and_grads(xs[:, at], masks[:, at] if masks is not None else None,
                                                labels[:, start: start + batch])
                optimizer.step()
                total += losses.double() * batch
                start += batch
        scheduler.step()
        per_epoch[epoch] = (total / max(n, 1)).cpu().numpy()
    return per_epoch


# --------------------------------------------------------------------------- how many members fit


def stacked_member_bytes(hidden: int, num_classes: int, n_rows: int, batch_size: int, dense: bool) -> int:
    """Memory one member of a pooled pack needs while it trains, in bytes (float32).

    Parameters, their gradients and Adam's two moments (4 copies); per step its gathered batch,
    dense output and tanh, dropout mask and product, logits, and the gradients of those (about
    twice the forward's); the features, masks and float64 uniforms of the `STEPS_AT_ONCE` steps
    prepared at once (16 bytes an element); its row positions and labels (int64).
    """
    params = hidden * num_classes + num_classes + ((hidden * hidden + hidden) if dense else 0)
    step = batch_size * (hidden * (6 if dense else 3) + 2 * num_classes) * 2
    prepared = 16 * STEPS_AT_ONCE * batch_size * hidden
    return 4 * (4 * params + step) + prepared + 16 * n_rows


def available_bytes(device: str | torch.device | None = None) -> int:
    """Memory free for training on `device`: the GPU's free memory, or the host's available RAM."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def max_pack_size(acts: Activations, num_classes: int, n_rows: int, recipe: RecipeConfig,
                  device: str | torch.device | None = None, budget_bytes: int | None = None,
                  share: float = 0.5) -> int:
    """How many members of a pooled pack fit on `device`: at least 1 (a solo training).

    The budget is `share` of the device's free memory (others may be using it: on a shared CPU
    node the other trials, on a GPU the other packs Tune placed there) unless `budget_bytes`
    says; one copy of the activations is shared by the pack. Token-level modes are not packed: 1.
    """
    if not packable(acts):
        return 1
    budget = budget_bytes if budget_bytes is not None else int(available_bytes(device) * share)
    shared = len(acts) * acts.hidden_size * 4  # at most every row of the activations, once
    per_member = stacked_member_bytes(acts.hidden_size, num_classes, n_rows, recipe.batch_size,
                              dense=acts.boundary.kind == "pooled")
    return max(1, math.floor((budget - shared) / per_member))
