"""The model: building it, training it, and the cache of trained models.

Every model raysweep trains goes through here: a trial's, the per-(freeze, seed) scoring model
the model-based strategies rank the pool by, and the teacher that relabels generated rows.

    build_model / fit / predict_proba   the trainable part over cached activations, the recipe
    trained_model                        the same, from <cache>/selection/models/<key>.pt when there
    train_remote                         several models as parallel Ray tasks, states back to the cache

The cache key (`model_key`) is frozen (tests/test_hashing.py): a model trained before a code
change is found after it.
"""

from __future__ import annotations

import contextlib
import io
import math
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysweep.backbone import Classifier, FullEncoderClassifier
from raysweep.cluster import get
from raysweep.config import RecipeConfig, to_dict
from raysweep.embed import Activations, load_activations
from raysweep.errors import RaysweepError
from raysweep.freeze import FreezeMode
from raysweep.hashing import array_digest, json_digest
from raysweep import packing
from raysweep.packing import Member
from raysweep.storage import Output, Shipped, atomic_write, receive, ship
from raysweep.tasks import Task, split_texts

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of a stored model state; bump when what is stored changes: old entries are then simply not found


class TrainingError(RaysweepError, RuntimeError):
    """A model that could not be trained (it diverged, or its training raised)."""


def _digest(obj) -> str:
    return json_digest(obj, 24)


def assigned_device() -> str:
    """The device this process trains and scores on: CUDA when it holds a GPU, else CPU.

    Inside a Ray task, actor or Tune trial that is what Ray assigned it (`ray.get_gpu_ids()`):
    a GPU on the node that Ray did not give this worker is not ours to use. Outside Ray (the
    driver, tests) any visible GPU."""
    gpus = _assigned()[1]
    if gpus is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if gpus and torch.cuda.is_available() else "cpu"


def _assigned() -> tuple[float | None, list | None]:
    """(CPUs, GPU ids) Ray assigned this worker, or (None, None) outside a Ray worker."""
    ray = sys.modules.get("ray")  # never import Ray just for this: trials and tests may run without it
    if ray is None or not ray.is_initialized():
        return None, None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver holds no resources of its own
        return None, None
    return context.get_assigned_resources().get("CPU"), ray.get_gpu_ids()


def use_assigned() -> str:
    """Match torch to what Ray gave this worker: one thread per assigned CPU (a trial shares its
    node with others), and the device (`assigned_device()`). Returns the device."""
    cpus = _assigned()[0]
    if cpus is not None:
        torch.set_num_threads(max(1, int(cpus)))
    return assigned_device()


# --------------------------------------------------------------------------- building and training


# Names a file every process of a run can append to (on one machine, or a shared filesystem):
# each model actually trained appends one JSON line there. The per-node-disk tests read it to
# prove that nothing is trained twice and to see on which node each model was trained.
TRAINING_LOG_ENV = "RAYSWEEP_TRAINING_LOG"


def log_training(kind: str, key: str) -> None:
    """Append {kind, key, host, pid, node} to $RAYSWEEP_TRAINING_LOG, if it is set."""
    path = os.environ.get(TRAINING_LOG_ENV)
    if not path:
        return
    node = None
    if "ray" in sys.modules:  # never import Ray just for this: trials and tests may run without it
        ray = sys.modules["ray"]
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    line = json.dumps({"kind": kind, "key": key, "host": socket.gethostname(), "pid": os.getpid(), "node": node})
    with open(path, "a", encoding="utf-8") as f:  # one short O_APPEND write: lines of processes do not mix
        f.write(line + "\n")


def fit(model: Classifier, acts: Activations, rows: np.ndarray, labels: np.ndarray, recipe: RecipeConfig,
        seed: int, device: str = "cpu", bf16: bool = False) -> float:
    """Train `model` (already on `device`) on `rows` of cached `acts` with the recipe; returns the
    last epoch's mean loss. `bf16`: token-level forward passes under bf16 autocast (CUDA only)."""
    if not acts.boundary.ragged:
        # Pooled features fit in memory: index one tensor instead of gathering from the mmap per batch.
        x_all = acts.dense(rows).to(device)
        return _optimise(model, lambda idx: model(x_all[idx]), len(rows), labels, recipe, seed, device=device)
    autocast = bf16 and device.startswith("cuda")

    def forward(idx):
        x, mask = acts.batch(rows[idx.numpy()])
        with torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            return model(x.to(device), mask.to(device) if mask is not None else None).float()

    return _optimise(model, forward, len(rows), labels, recipe, seed, lengths=acts.lengths(rows), device=device)


def fit_uncached(model: FullEncoderClassifier, texts: list[str], labels: np.ndarray, recipe: RecipeConfig,
                 seed: int) -> float:
    """The same training, running the frozen encoder on every step (no activation cache).

    Token-level modes group batches by token count exactly as the cached path does, so both
    paths see the same batches and reach the same weights.
    """
    lengths = None
    if model.classifier.boundary.ragged:
        enc = model.backbone.tokenizer(*split_texts(list(texts)), truncation=True,
                                       max_length=model.classifier.boundary.max_length)
        lengths = np.array([len(ids) for ids in enc["input_ids"]])
    return _optimise(model.classifier, lambda idx: model([texts[i] for i in idx.tolist()]), len(texts), labels,
                     recipe, seed, lengths=lengths)


def _optimise(model: Classifier, forward, n: int, labels: np.ndarray, recipe: RecipeConfig, seed: int,
              lengths: np.ndarray | None = None, device: str = "cpu") -> float:
    """The study's recipe over `n` rows; `forward(positions)` returns the head's outputs of a batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = packing.recipe_optimizer(params, recipe)
    task = model.task
    loss_fn = task.loss()  # task: cross-entropy over classes, or MSE of a score
    y = task.targets(labels).to(device)  # task: int64 classes or float32 [N, 1] scores (a copy)
    task.start(model.linear, labels)  # task: a regression head starts at the mean score
    order_gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)  # the batch-order stream
    model.train()
    last = 0.0
    for _ in range(recipe.epochs):
        total, count = 0.0, 0
        for idx in packing.batch_order(n, recipe.batch_size, order_gen, lengths):
            loss = loss_fn(forward(idx), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        scheduler.step()
        last = total / max(count, 1)
    return last


@torch.no_grad()
def predict_proba(model: Classifier, acts: Activations, rows: np.ndarray | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (softmax of the head) for `rows` of `acts` (all rows by default);
    a regression head's predicted scores [N, 1] (`Task.predict`)."""
    task = model.task
    model.eval()
    device = next(model.parameters()).device  # wherever the model was trained
    rows = np.arange(len(acts)) if rows is None else np.asarray(rows)
    out = []
    for start in range(0, len(rows), batch_size):
        x, mask = acts.batch(rows[start: start + batch_size])
        x, mask = x.to(device), mask.to(device) if mask is not None else None
        out.append(task.predict(model(x, mask).float()).cpu())  # task: softmax, or the score as it is
    return torch.cat(out).numpy() if out else np.zeros((0, model.linear.out_features), dtype=np.float32)


def build_model(acts: Activations, num_classes: int, recipe: RecipeConfig, seed: int,
                freeze: FreezeMode | None = None, task: Task | None = None) -> Classifier:
    torch.manual_seed(seed)  # the initialisation + dropout stream
    init = acts.init_modules()
    task = task or Task("classify", num_classes)  # task: the head's output size and loss come from it
    model = Classifier(acts.boundary, acts.hidden_size, task.outputs, recipe.dropout,
                       top=init["top"], dense=init["dense"], freeze=freeze, task=task)
    return model


def member_bytes(acts: Activations, num_classes: int, recipe: RecipeConfig, rows: int,
                 freeze: FreezeMode | None = None) -> int:
    """A bound on the memory one member of a pack takes on its device while it trains `rows` rows.

    Its trainable part with gradients and Adam's two moments (16 bytes a parameter), plus:
    pooled features, which `fit` holds whole (4 bytes x rows x width); or, token-level, one
    batch through the trained layers (about 24 floats per token and hidden unit for a layer's
    forward and backward, padded to max_length). Frozen weights (a LoRA layer's) count 4 bytes.
    """
    model = build_model(acts, num_classes, recipe, 0, freeze)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    size = 16 * trainable + 4 * frozen
    if not acts.boundary.ragged:
        return size + 4 * rows * acts.hidden_size
    # A transformer layer has about 12 x hidden^2 weights: how many layers the batch goes through.
    layers = max(1, round((trainable + frozen) / (12 * acts.hidden_size**2)))
    return size + 4 * 24 * recipe.batch_size * acts.boundary.max_length * acts.hidden_size * layers


# --------------------------------------------------------------------------- the model trained on some rows


def model_key(acts: Activations, rows: np.ndarray, labels: np.ndarray, num_classes: int, recipe: RecipeConfig,
              seed: int, freeze: FreezeMode | None = None, task: Task | None = None) -> str:
    regression = task is not None and task.regression
    # A score must not be hashed as an integer (2.4 and 2.6 would share a key); a class keeps the int64 recipe.
    labels = array_digest(np.asarray(labels, np.float64 if regression else np.int64))
    spec = {"v": FORMAT_VERSION, "acts": acts.path.name, "rows": array_digest(np.asarray(rows, np.int64)),
            "labels": labels, "classes": num_classes, "recipe": to_dict(recipe), "seed": seed}
    if freeze is not None:  # what the activations cannot say (a LoRA mode shares top-K's); else nothing
        spec.update(freeze.key_part())
    if task is not None and task.name != "classify":  # likewise: single-sentence classification keeps its keys
        spec["task"] = task.name
    return _digest(spec)


def model_path(cache_dir: str | Path, acts: Activations, rows: np.ndarray, labels: np.ndarray, num_classes: int,
               recipe: RecipeConfig, seed: int, freeze: FreezeMode | None = None, task: Task | None = None) -> Path:
    key = model_key(acts, rows, labels, num_classes, recipe, seed, freeze, task)
    return Path(cache_dir) / "selection" / "models" / f"{key}.pt"


def save_state(path: Path, state: bytes) -> None:
    """Store a model state trained elsewhere (a remote task's return value) under its cache key."""
    atomic_write(path, lambda tmp: tmp.write_bytes(state))


def trained_model(acts: Activations, rows: np.ndarray, labels: np.ndarray, num_classes: int, recipe: RecipeConfig,
                  seed: int, cache_dir: str | Path | None = None, freeze: FreezeMode | None = None,
                  device: str = "cpu", task: Task | None = None) -> Classifier:
    """The model a trial with these rows would train (`build_model` + `fit`), from the cache when
    another trial or the sweep's driver trained it already (one member of `trained_models`)."""
    [result] = trained_models(acts, [Member(np.asarray(rows), np.asarray(labels), seed, freeze, task)], num_classes, recipe,
                              cache_dir, device)
    if result.error is not None:
        raise result.failure()
    return result.model


# --------------------------------------------------------------------------- several models at once


@dataclass
class MemberResult:
    """How one member's training ended: a trained model, or why it failed (it fails alone)."""

    model: Classifier | None
    final_loss: float
    error: str | None = None
    train_s: float = 0.0  # this member's share of the training wall time
    cached: bool = False  # loaded from the model cache, not trained here
    exception: Exception | None = None  # what `error` describes, when the training raised

    def failure(self) -> Exception:
        """The exception a caller raises (or records) for this member's failure."""
        return self.exception if self.exception is not None else TrainingError(self.error)


def train_members(acts: Activations, members: list[Member], num_classes: int, recipe: RecipeConfig,
                  device: str = "cpu", bf16: bool = False) -> list[MemberResult]:
    """Train every member over `acts` on `device`: the one entry point for training several models.

    Each member follows exactly the path it would alone (`build_model` + `fit`, its own seeded
    streams). A member whose training raises or diverges (a non-finite loss) fails alone; the
    others are unaffected. Pooled-mode members with the same number of rows train as one stacked
    model (`fit_packed`, packing.py), which reaches the same weights up to float32 reduction order;
    the others (token-level, LoRA, a pack of one) train one after another.
    """
    if (len(members) > 1 and packing.packable(acts, members[0].freeze, members[0].task)
            and len({len(m.rows) for m in members}) == 1):
        start = time.perf_counter()
        try:
            packed = fit_packed(acts, members, recipe, device, num_classes=num_classes)
        except Exception:  # noqa: BLE001 - e.g. out of memory: alone, each member fails (or not) on its own
            log.warning("a pack of %d failed; training its members one by one", len(members), exc_info=True)
        else:
            share = (time.perf_counter() - start) / len(members)
            return [MemberResult(r.model if r.error is None else None, r.final_loss,
                                 None if r.error is None else f"TrainingDiverged: {r.error}", share) for r in packed]
    results = []
    for m in members:
        start = time.perf_counter()
        try:
            model = build_model(acts, num_classes, recipe, m.seed, freeze=m.freeze, task=m.task).to(device)
            loss = fit(model, acts, np.asarray(m.rows), np.asarray(m.labels), recipe, m.seed, device, bf16)
        except Exception as exc:  # noqa: BLE001 - this member's failure, recorded on its cell
            results.append(MemberResult(None, math.nan, error_line(exc), time.perf_counter() - start, exception=exc))
            continue
        error = None if math.isfinite(loss) else f"TrainingDiverged: the loss became {loss} (lr {recipe.lr:g})"
        results.append(MemberResult(model if error is None else None, loss, error, time.perf_counter() - start))
    return results


def fit_packed(acts: Activations, members: list[Member], recipe: RecipeConfig, device: str | torch.device | None = None,
               *, num_classes: int) -> list[packing.StackedResult]:
    """Train every member as `build_model` + `fit` would alone, as one stacked model (packing.py).

    Each member's model is built here exactly as alone (global seed = its seed: the init), and its
    dropout stream starts where that left the global generator, as the solo path's masks do. The
    caller's global RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        models, streams = [], []
        for m in members:
            models.append(build_model(acts, num_classes, recipe, m.seed, freeze=m.freeze, task=m.task))
            stream = torch.Generator()
            stream.set_state(torch.get_rng_state())
            streams.append(stream)
    return packing.train_stack(acts, members, models, streams, recipe, device)


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`: how a failed cell's error is recorded."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"


def trained_models(acts: Activations, members: list[Member], num_classes: int, recipe: RecipeConfig,
                   cache_dir: str | Path | None = None, device: str = "cpu", store: bool = True,
                   bf16: bool = False, kind: str | None = "model") -> list[MemberResult]:
    """`train_members`, but a member whose model is in the cache (`model_key`) is loaded instead.

    `store`: save the newly trained models in the cache (the scoring models, which every trial
    of a (freeze, seed) reads; trials do not store theirs, but a trial on `labeled` alone finds
    its seed's scoring model there: the same training). `kind` names the trainings in
    $RAYSWEEP_TRAINING_LOG (None: the caller logs them itself)."""
    results: list[MemberResult | None] = [None] * len(members)
    paths: list[Path | None] = [None] * len(members)
    todo = []
    for i, m in enumerate(members):
        if cache_dir is not None:
            paths[i] = model_path(cache_dir, acts, m.rows, m.labels, num_classes, recipe, m.seed, m.freeze, m.task)
            if paths[i].exists():
                model = build_model(acts, num_classes, recipe, m.seed, freeze=m.freeze, task=m.task)
                model.load_state_dict(torch.load(paths[i], weights_only=True))
                results[i] = MemberResult(model.to(device), math.nan, cached=True)
                continue
        todo.append(i)
    trained = train_members(acts, [members[i] for i in todo], num_classes, recipe, device, bf16)
    for i, result in zip(todo, trained):
        results[i] = result
        m = members[i]
        if result.error is None:
            if kind is not None:
                log_training(kind, model_key(acts, m.rows, m.labels, num_classes, recipe, m.seed, m.freeze, m.task))
            if store and paths[i] is not None:
                state = {k: v.cpu() for k, v in result.model.state_dict().items()}
                atomic_write(paths[i], lambda tmp: torch.save(state, tmp))
    return results


def rebuild(acts: Activations, state: dict, dropout: float, freeze: FreezeMode | None = None,
            task: Task | None = None) -> Classifier:
    """A classifier over `acts` with a given state (the Ray Data actors' copy of the model)."""
    num_classes = state["linear.weight"].shape[0]
    init = acts.init_modules()
    model = Classifier(acts.boundary, acts.hidden_size, num_classes, dropout, top=init["top"], dense=init["dense"],
                       freeze=freeze, task=task)
    model.load_state_dict(state)
    return model


def train_pack(acts: Shipped, members: list[Member], num_classes: int, recipe: dict, kind: str) -> list[bytes | str]:
    """Ray task: train a pack of members over one activation set (`train_members`) on the device
    and threads Ray assigned it; returns each member's state, or its error line.

    It may run on a node that never saw the driver's cache: the activations come through
    `storage.receive`, and the states go back as return values (tens of KB for a head, a few
    MB with an encoder layer), which the driver stores under the models' cache keys. Nothing is
    left on the node for the driver to miss and train again."""
    device = use_assigned()
    recipe = RecipeConfig(**recipe)
    loaded = load_activations(receive(acts))
    out = []
    for m, result in zip(members, train_members(loaded, members, num_classes, recipe, device)):
        if result.error is not None:
            out.append(result.error)
            continue
        log_training(kind, model_key(loaded, m.rows, m.labels, num_classes, recipe, m.seed, m.freeze, m.task))
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, buf)
        out.append(buf.getvalue())
    return out


@dataclass(frozen=True)
class TrainingSpec:
    """One model to train: over which activations, how many outputs, with which recipe, and the
    member (rows, labels, seed, adapters, task) that says what it learns. Its cache path is the
    one `trained_model` looks under."""

    acts: Activations
    member: Member
    num_classes: int
    recipe: RecipeConfig

    def path(self, cache_dir: str | Path) -> Path:
        m = self.member
        return model_path(cache_dir, self.acts, m.rows, m.labels, self.num_classes, self.recipe, m.seed, m.freeze, m.task)


def train_remote(specs: list[TrainingSpec], cache_dir: str | Path, out: Output | None = None, cpus: float = 1,
                 gpus: float = 0, pack_size: int = 1, kind: str = "model") -> None:
    """Train each spec in packs of up to `pack_size` members sharing activations, outputs and
    recipe, each pack a parallel Ray task with `cpus`/`gpus`, and store every returned state in
    the driver's cache (`trained_model` then loads it). A member that failed is not stored:
    `trained_model` then trains it again and raises its error."""
    import ray

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(train_pack)  # the dashboard names a task by its function
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((str(spec.acts.path), spec.num_classes, json_digest(to_dict(spec.recipe), 24)), []).append(i)
    shipped, refs, packs = {}, [], []
    size = max(1, pack_size)
    for at in groups.values():
        for first in range(0, len(at), size):
            pack = at[first: first + size]
            head = specs[pack[0]]
            if head.acts.path not in shipped:
                shipped[head.acts.path] = ship(head.acts.path, out)
            members = [specs[i].member for i in pack]
            refs.append(remote.remote(shipped[head.acts.path], members, head.num_classes, to_dict(head.recipe), kind))
            packs.append(pack)
    for pack, states in zip(packs, get(refs)):
        for i, state in zip(pack, states):
            if isinstance(state, bytes):
                save_state(specs[i].path(cache_dir), state)
