"""``pyfastopt demo``: the end-to-end pipeline on scikit-learn's digits.

Stages (everything on the bundled 8x8 digits: nothing is downloaded):

1. **teacher**: an MLP 64-256-256-10 (BatchNorm1d, ReLU, Dropout) trained with AdamW
   (weight decay on weight matrices only), a per-step learning rate of linear warmup then
   cosine decay (``SequentialLR(LinearLR, CosineAnnealingLR)``), gradient clipping
   (``clip_grad_norm_``) and one-pixel random shifts of the images (``RandomShift``).
2. **student**: an MLP 64-128-64-10 (about 5x fewer parameters) distilled from the
   teacher with ``distillation_loss`` (T=4, alpha=0.9), same optimizer recipe.
3. **pruned**: the student loses 25% of its hidden neurons (``structured="rows"``: the
   model really shrinks), then 60% of the remaining weights by magnitude (global
   scope), and is fine-tuned by distillation with a masked AdamW so the pruned weights
   stay zero.
4. **int8**: the pruned student is quantized (static, per-channel int8 weights, uint8
   activations calibrated on training inputs, BatchNorm folded), saved as a versioned
   model file, reloaded from it, and the reloaded model is evaluated
   (:func:`_quantize_stage`).

``pyfastopt demo --model cnn`` (``run_demo(model="cnn")``) runs the same four stages with
convolutional networks on the digits as 8x8x1 images (channels-last): a teacher CNN
(three 3x3 conv-BatchNorm-ReLU blocks 32-64-64, max pools, a linear classifier), a
student CNN distilled from it (16-32 channels, about 9x fewer parameters), 25% of the
student's filters removed (:func:`pyfastopt.prune.prune_filters`: the convolutions and
the classifier really shrink) and 50% of the remaining weights masked, fine-tuned, then
int8 (BatchNorm2d folded into the convolutions, int8 convolutions and pools,
:class:`pyfastopt.quant.QuantizedCNN`).

The result is one table: stage, test accuracy, parameters (non-zero ones for the pruned
model), bytes on disk (``np.savez_compressed`` of the float state dict), and inference
latency per sample (the whole test set as one batch, best of several runs, divided by its
size). Accuracies are bitwise reproducible for a given seed (all randomness is seeded and
the kernels give the same bits for any thread count); latencies are measurements.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import nn, optim
from ._config import threads as _threads
from ._fileio import atomic_write
from .data import DataLoader, RandomShift
from .optim import lr_scheduler
from .prune import magnitude_prune, masked, prune_filters, remove, sparsity
from .quant import load, quantize_model

__all__ = ["CNN_EPOCHS", "DEFAULT_EPOCHS", "QUICK_EPOCHS", "run_demo"]

#: epochs of (teacher, student, pruned fine-tuning) for a normal run and for ``--quick``
DEFAULT_EPOCHS = (40, 40, 13)
QUICK_EPOCHS = (3, 3, 1)
#: epochs of the CNN pipeline (``model="cnn"``; ``--quick``: QUICK_CNN_EPOCHS)
CNN_EPOCHS = (12, 12, 4)
QUICK_CNN_EPOCHS = (2, 2, 1)
_SPLIT_SEED = 0  # the train/test split is fixed, whatever --seed is
_TEST_FRACTION = 0.2
_BATCH = 64
#: AdamW peak learning rates of the three training stages
_LR = {"teacher": 3e-3, "student": 1e-2, "pruned": 3e-3}
_CNN_LR = {"teacher": 3e-3, "student": 5e-3, "pruned": 2e-3}


# ------------------------------------------------------------------------------- data
def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 in [0, 1], split 80/20 (stratified, fixed seed)."""
    try:  # optional (the demo extra), and ~0.3 s to import: only when the demo runs
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "pyfastopt demo needs scikit-learn for its data set: pip install 'pyfastopt[demo]'"
        ) from None
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(_SPLIT_SEED)
    test = []
    for c in range(10):  # stratified: 20% of each class
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[: round(_TEST_FRACTION * idx.size)])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(y.size), test_idx)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


# ------------------------------------------------------------------------------ models
def mlp(sizes: Iterable[int], dropout: float, seed: int) -> nn.Sequential:
    """``Linear -> BatchNorm1d -> ReLU -> Dropout`` blocks, then a Linear classifier."""
    sizes = list(sizes)
    ss = np.random.SeedSequence(seed)
    seeds = [int(s) for s in ss.generate_state(2 * len(sizes), np.uint32)]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, seed=seeds[2 * i]))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout, seed=seeds[2 * i + 1]))
    return nn.Sequential(*layers)


def cnn(channels: Iterable[int], pools: Iterable[bool], seed: int) -> nn.Sequential:
    """Channels-last CNN on 8x8x1 images: ``Conv2d 3x3 -> BatchNorm2d -> ReLU`` blocks
    (``MaxPool2d(2)`` after the blocks flagged in ``pools``), then ``Flatten -> Linear``."""
    chans, pools = [1, *channels], list(pools)
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(len(chans), np.uint32)]
    layers: list[nn.Module] = []
    size = 8
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        layers += [
            nn.Conv2d(a, b, 3, padding=1, bias=False, layout="NHWC", seed=seeds[i]),
            nn.BatchNorm2d(b, layout="NHWC"),
            nn.ReLU(),
        ]
        if pools[i]:
            layers.append(nn.MaxPool2d(2, layout="NHWC"))
            size //= 2
    layers += [nn.Flatten(layout="NHWC"), nn.Linear(chans[-1] * size * size, 10, seed=seeds[-1])]
    return nn.Sequential(*layers)


def _images(x: np.ndarray) -> np.ndarray:
    """Flat 64-pixel digits as channels-last images (N, 8, 8, 1)."""
    return x.reshape(x.shape[0], 8, 8, 1)


def count_params(model: nn.Module) -> int:
    return sum(p.size for _, p in model.named_parameters())


def count_nonzero_params(model: nn.Module) -> int:
    return sum(int(np.count_nonzero(p)) for _, p in model.named_parameters())


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = np.argmax(model(x), axis=1)
    return float(np.mean(pred == y))


def latency_per_sample(
    predict: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int = 20
) -> float:
    """Seconds per sample: the best of ``repeats`` whole-batch runs, divided by the batch."""
    predict(x)  # warm up buffers and caches
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(x)
        best = min(best, time.perf_counter() - t0)
    return best / x.shape[0]


def save_float(model: nn.Module, path: str) -> int:
    """Save the state dict as a compressed npz (atomically); returns its size in bytes."""
    arrays: dict[str, Any] = model.state_dict()
    with atomic_write(path) as fh:
        np.savez_compressed(fh, **arrays)
    return os.path.getsize(path)


# ---------------------------------------------------------------------------- training
class _Progress:
    """tqdm over epochs when stdout is a terminal and tqdm is installed; else silent."""

    def __init__(self, enabled: bool | None) -> None:
        if enabled is None:
            enabled = sys.stdout.isatty()
        self.tqdm = None
        if enabled:
            try:  # optional (the demo extra)
                from tqdm import tqdm

                self.tqdm = tqdm
            except ImportError:
                pass

    def __call__(self, n: int, desc: str) -> Any:
        if self.tqdm is None:
            return _NoBar(n)
        return self.tqdm(range(n), desc=desc, unit="epoch", leave=False, dynamic_ncols=True)


class _NoBar:
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Any:
        return iter(range(self.n))

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> tuple[Any, list[np.ndarray]]:
    """AdamW with decay on weight matrices (and conv kernels) only; returns it and the gradient list in the
    optimizer's parameter order (the same arrays that ``backward`` fills)."""
    params, grads = model.parameters(), model.gradients()
    decay = [i for i, p in enumerate(params) if p.ndim >= 2]  # Linear and Conv2d weights
    rest = [i for i, p in enumerate(params) if p.ndim < 2]
    opt = optim.AdamW(
        [
            {"params": [params[i] for i in decay], "weight_decay": weight_decay},
            {"params": [params[i] for i in rest], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    return opt, [grads[i] for i in decay + rest]


def _warmup_cosine(opt: Any, total_steps: int, warmup_steps: int) -> Any:
    warmup_steps = max(1, min(warmup_steps, total_steps - 1))
    warm = lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=warmup_steps)
    cos = lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps - warmup_steps))
    return lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[warmup_steps])


def train(
    model: nn.Module,
    loader: DataLoader,
    epochs: int,
    loss_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, np.ndarray]],
    evaluate: Callable[[], float],
    *,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    clip: float = 2.0,
    masks: Any = None,
    bar: Any,
) -> dict[str, list[float]]:
    """Train in place; returns the per-epoch history (train loss, test accuracy, lr).

    ``bar`` iterates over the epochs (a tqdm bar or a silent stand-in) and shows the
    last epoch's loss and accuracy."""
    opt, grads = _optimizer(model, lr, weight_decay)
    stepper = masked(opt, masks) if masks is not None else opt
    total = max(1, epochs * len(loader))
    sched = _warmup_cosine(opt, total, warmup_steps=max(1, total // 10))
    history: dict[str, list[float]] = {"loss": [], "test_acc": [], "lr": []}
    for epoch in bar:
        model.train()
        loader.set_epoch(epoch)
        losses = []
        for xb, yb in loader:
            logits = model(xb)
            loss, dlogits = loss_fn(logits, xb, yb)
            model.backward(dlogits, need_dx=False)
            optim.clip_grad_norm_(grads, clip)
            stepper.step(grads)
            sched.step()
            losses.append(loss)
        history["loss"].append(float(np.mean(losses)))
        history["test_acc"].append(evaluate())
        history["lr"].append(float(sched.get_last_lr()[0]))
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", acc=f"{history['test_acc'][-1]:.3f}")
    model.eval()
    return history


# ------------------------------------------------------------------------- int8 hook
def _quantize_stage(
    student: nn.Module, calib_x: np.ndarray, outdir: str, say: Callable[[str], None] = print
) -> Any:
    """Quantize ``student`` to int8, save it, load it back; the reloaded model is evaluated.

    Static per-channel quantization (:func:`pyfastopt.quant.quantize_model`): int8
    symmetric weights per output channel, BatchNorm folded into the preceding Linear,
    Dropout removed, and uint8 activations calibrated on ``calib_x`` (a few hundred
    training inputs), so the whole model runs in one call into C++ with uint8 between the
    layers. The per-layer SNR report (int8 vs float output) is printed.

    Returns ``(stage_name, predict, path, params)``: ``predict(x) -> logits`` of the model
    *reloaded from the file*, the file's path, and the number of non-zero parameters
    (int8 weights plus float32 biases).
    """
    qmodel = quantize_model(student, calib_x, mode="static", per_channel=True)
    for line in qmodel.format_report().splitlines():
        say("      " + line)
    path = os.path.join(outdir, "student_int8.pfq")
    qmodel.save(path)
    reloaded = load(path)
    # non-zero parameters, as for the pruned student (BatchNorm is folded away)
    params = sum(int(np.count_nonzero(ql.weight_q)) + ql.out_features for ql in reloaded.layers)
    return "int8 student", reloaded, path, params


def _quantize_cnn_stage(
    student: nn.Module, calib_x: np.ndarray, outdir: str, say: Callable[[str], None] = print
) -> Any:
    """:func:`_quantize_stage` for the CNN: BatchNorm2d folded into the convolutions, int8
    convolutions and pools (:class:`pyfastopt.quant.QuantizedCNN`); same return value."""
    qmodel = quantize_model(student, calib_x, mode="static", per_channel=True)
    for line in qmodel.format_report().splitlines():
        say("      " + line)
    path = os.path.join(outdir, "cnn_student_int8.pfq")
    qmodel.save(path)
    reloaded = load(path)
    # non-zero parameters, as for the pruned student (BatchNorm2d is folded away)
    params = 0
    for node in reloaded.layers:
        if node.kind == "conv":
            params += int(np.count_nonzero(node.weight_q)) + node.weight_q.shape[0]
        elif node.kind == "linear":
            params += int(np.count_nonzero(node.ql.weight_q)) + node.ql.out_features
    return "int8 student", reloaded, path, params


# ------------------------------------------------------------------------------- demo
def run_demo(
    epochs: int | tuple[int, int, int] | None = None,
    seed: int = 0,
    outdir: str | None = None,
    plot: bool = False,
    quick: bool = False,
    progress: bool | None = None,
    verbose: bool = True,
    threads: int | None = 1,
    model: str = "mlp",
) -> list[dict[str, Any]]:
    """Run the pipeline and return the table rows.

    Args:
        epochs: teacher/student epochs (an int; the pruned model is fine-tuned for a
            third as many, at least 1), or a ``(teacher, student, finetune)`` tuple.
            Default ``DEFAULT_EPOCHS`` (``QUICK_EPOCHS`` with ``quick``).
        seed (int): initializations, dropout masks, shuffling and augmentation; the
            train/test split is fixed.
        outdir: where the saved models go; default a new temporary directory (printed;
            it is not deleted).
        plot (bool): also write ``demo.png`` (training curves and the table) to
            ``outdir``; needs matplotlib (otherwise a message, and no plot).
        quick (bool): few epochs, for tests.
        progress: tqdm bars (None: only when stdout is a terminal).
        verbose (bool): print the stages and the table.
        threads: pyfastopt threads during the demo (None: the library default). Default
            1: every operation here is tiny (batch 64, width <= 256), so a second thread
            buys little, and on a loaded machine each parallel region can wait for a
            descheduled thread (measured: 6x slower on 2 busy cores). Results are the
            same bits for any thread count; latencies change.
        model: ``"mlp"`` (default) or ``"cnn"`` (the convolutional pipeline, see the
            module docstring; default epochs ``CNN_EPOCHS``).

    Returns:
        list of dict, one per stage: ``stage``, ``accuracy``, ``params``, ``bytes``,
        ``latency_us`` (plus ``path``: the saved file).
    """
    if model not in ("mlp", "cnn"):
        raise ValueError(f"model must be 'mlp' or 'cnn', got {model!r}")
    cnn_ = model == "cnn"
    if threads is None:
        return _run(epochs, seed, outdir, plot, quick, progress, verbose, cnn_)
    with _threads(threads):
        return _run(epochs, seed, outdir, plot, quick, progress, verbose, cnn_)


def _stage_row(
    stage: str,
    model: nn.Module,
    params: int,
    outdir: str,
    prefix: str,
    x_te: np.ndarray,
    y_te: np.ndarray,
) -> dict[str, Any]:
    """One row of the demo's table: save the float model (``<prefix><first word>.npz``
    in outdir), then its test accuracy, size and per-sample latency in eval mode."""
    path = os.path.join(outdir, f"{prefix}{stage.split()[0]}.npz")
    nbytes = save_float(model, path)
    model.eval()
    return {
        "stage": stage,
        "accuracy": accuracy(model, x_te, y_te),
        "params": params,
        "bytes": nbytes,
        "latency_us": 1e6 * latency_per_sample(model, x_te),
        "path": path,
    }


def _run(
    epochs: int | tuple[int, int, int] | None,
    seed: int,
    outdir: str | None,
    plot: bool,
    quick: bool,
    progress: bool | None,
    verbose: bool,
    use_cnn: bool = False,
) -> list[dict[str, Any]]:
    t_start = time.perf_counter()
    ep: tuple[int, ...]
    if epochs is None and use_cnn:
        ep = QUICK_CNN_EPOCHS if quick else CNN_EPOCHS
    elif epochs is None:
        ep = QUICK_EPOCHS if quick else DEFAULT_EPOCHS
    elif isinstance(epochs, int):
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        ep = (epochs, epochs, max(1, epochs // 3))
    else:
        ep = tuple(int(e) for e in epochs)
        if len(ep) != 3 or min(ep) < 1:
            raise ValueError(f"epochs must be an int >= 1 or three of them, got {epochs!r}")
    if outdir is None:
        outdir = tempfile.mkdtemp(prefix="pyfastopt-demo-")
    os.makedirs(outdir, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    bars = _Progress(progress if verbose else False)

    x_tr, y_tr, x_te, y_te = load_digits_split()
    if use_cnn:
        x_tr, x_te = _images(x_tr), _images(x_te)
        flat_shift = RandomShift(1, image_shape=(8, 8))

        def image_shift(x: np.ndarray, rng: Any) -> np.ndarray:
            return _images(flat_shift(x.reshape(x.shape[0], 64), rng))

        pipe = _Pipeline(
            intro=f"{x_tr.shape[0]} train / {x_te.shape[0]} test 8x8x1 images (channels-last)",
            prefix="cnn_",
            lr=_CNN_LR,
            transform=image_shift,
            teacher=lambda s: cnn([32, 64, 64], [False, True, True], seed=s),
            teacher_text="a teacher CNN conv 32-64-64 (3x3, BatchNorm, ReLU, max pools)",
            student=lambda s: cnn([16, 32], [True, True], seed=s),
            student_text="a student CNN conv 16-32",
            prune=_prune_cnn,
            quantize=_quantize_cnn_stage,
            quantize_text="int8 quantization (BatchNorm2d folded, int8 convolutions), save, reload",
        )
    else:
        pipe = _Pipeline(
            intro=f"{x_tr.shape[0]} train / {x_te.shape[0]} test samples, 8x8 images",
            prefix="",
            lr=_LR,
            transform=RandomShift(1, image_shape=(8, 8)),
            teacher=lambda s: mlp([64, 256, 256, 10], dropout=0.2, seed=s),
            teacher_text=("the teacher 64-256-256-10 (AdamW, warmup + cosine, clipping, shifts)"),
            student=lambda s: mlp([64, 128, 64, 10], dropout=0.0, seed=s),
            student_text="a student 64-128-64-10",
            prune=_prune_mlp,
            quantize=_quantize_stage,
            quantize_text="int8 quantization, save, reload",
        )
    say(
        f"digits: {pipe.intro}; epochs (teacher, student, fine-tune) = {ep}; seed {seed}; "
        f"output in {outdir}"
    )
    rows, curves = _run_stages(pipe, ep, seed, outdir, (x_tr, y_tr, x_te, y_te), bars, say)
    wall = time.perf_counter() - t_start
    say("")
    say(format_table(rows))
    say(f"\nwall time {wall:.1f} s; files in {outdir}")
    if plot:
        _plot(curves, rows, os.path.join(outdir, "demo.png"), say)
    return rows


@dataclass(frozen=True)
class _Pipeline:
    """What differs between the MLP and the CNN demo: data, models, pruning, int8."""

    intro: str  # the data line
    prefix: str  # saved file names start with this
    lr: dict[str, float]  # peak learning rate per stage
    transform: Callable[[np.ndarray, Any], np.ndarray]  # training augmentation
    teacher: Callable[[int], nn.Module]  # seed -> model
    teacher_text: str
    student: Callable[[int], nn.Module]
    student_text: str
    prune: Callable[[nn.Module], tuple[nn.Module, Any, str]]  # -> (pruned, masks, what)
    quantize: Callable[..., Any]  # (model, calib_x, outdir, say) -> (stage, predict, path, params)
    quantize_text: str


def _prune_mlp(student: nn.Module) -> tuple[nn.Module, Any, str]:
    pruned = magnitude_prune(copy.deepcopy(student), 0.25, structured="rows")
    masks = magnitude_prune(pruned, 0.6, scope="global")
    hidden = [lin.out_features for lin in pruned if isinstance(lin, nn.Linear)][:-1]
    return (
        pruned,
        masks,
        f"25% of hidden neurons removed (hidden sizes {hidden}), then 60% of the remaining weights",
    )


def _prune_cnn(student: nn.Module) -> tuple[nn.Module, Any, str]:
    pruned = prune_filters(copy.deepcopy(student), 0.25)
    masks = magnitude_prune(pruned, 0.5, scope="global")
    widths = [c.out_channels for c in pruned if isinstance(c, nn.Conv2d)]
    return (
        pruned,
        masks,
        f"25% of the filters removed (conv widths {widths}), then 50% of the remaining weights",
    )


def _run_stages(
    pipe: _Pipeline,
    ep: tuple[int, ...],
    seed: int,
    outdir: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    bars: _Progress,
    say: Callable[..., None],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """The four stages (module docstring) of one pipeline: the table rows and the curves."""
    x_tr, y_tr, x_te, y_te = data
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(5, np.uint32)]
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list[float]]] = {}

    def record(stage: str, model: nn.Module, params: int) -> None:
        rows.append(_stage_row(stage, model, params, outdir, pipe.prefix, x_te, y_te))

    def fit(
        key: str,
        model: nn.Module,
        loss: Callable,
        seed_: int,
        epochs: int,
        label: str,
        masks: Any = None,
    ) -> None:
        """Train ``model`` for one stage (augmented mini-batches keyed by ``seed_``)."""
        loader = DataLoader(x_tr, y_tr, batch_size=_BATCH, seed=seed_, transform=pipe.transform)
        bar = bars(epochs, label)
        curves[key] = train(
            model,
            loader,
            epochs,
            loss,
            lambda: accuracy(model, x_te, y_te),
            lr=pipe.lr[key],
            masks=masks,
            bar=bar,
        )
        bar.close()

    # 1. teacher ------------------------------------------------------------------
    teacher = pipe.teacher(seeds[0])

    def ce(logits: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray]:
        return nn.cross_entropy(logits, yb)

    say(f"[1/4] training {pipe.teacher_text}")
    fit("teacher", teacher, ce, seeds[1], ep[0], "teacher")
    record("teacher", teacher, count_params(teacher))

    # 2. student by distillation ---------------------------------------------------
    teacher.eval()

    def distill(logits: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray]:
        return nn.distillation_loss(logits, teacher(xb), yb, temperature=4.0, alpha=0.9)

    student = pipe.student(seeds[2])
    ratio = count_params(teacher) / count_params(student)
    say(f"[2/4] distilling {pipe.student_text} ({ratio:.1f}x fewer parameters)")
    fit("student", student, distill, seeds[3], ep[1], "student")
    record("student", student, count_params(student))

    # 3. pruning: structured (really smaller), then magnitude, then masked fine-tuning ---
    pruned, masks, what = pipe.prune(student)
    acc_before = accuracy(pruned, x_te, y_te)
    say(
        f"[3/4] pruning the student: {what} (test accuracy {acc_before:.4f} before "
        "fine-tuning); fine-tuning with masks"
    )
    fit("pruned", pruned, distill, seeds[4], ep[2], "fine-tune", masks=masks)
    remove(pruned)  # permanent (as torch.nn.utils.prune.remove): the file holds no masks
    record("pruned student", pruned, count_nonzero_params(pruned))
    rows[-1]["sparsity"] = sparsity(pruned)
    rows[-1]["accuracy_before_finetune"] = acc_before
    # the saved file reloads to the same model
    reloaded = copy.deepcopy(pruned)
    with np.load(rows[-1]["path"]) as f:
        reloaded.load_state_dict({k: f[k] for k in f.files})
    if accuracy(reloaded, x_te, y_te) != rows[-1]["accuracy"]:
        raise RuntimeError("the saved pruned model does not reload to the same accuracy")

    # 4. int8 ------------------------------------------------------------------------
    say(f"[4/4] {pipe.quantize_text}")
    stage, predict, path, params = pipe.quantize(pruned, x_tr[:256], outdir, say)
    rows.append(
        {
            "stage": stage,
            "accuracy": float(np.mean(np.argmax(predict(x_te), axis=1) == y_te)),
            "params": int(params),
            "bytes": os.path.getsize(path),
            "latency_us": 1e6 * latency_per_sample(predict, x_te),
            "path": path,
        }
    )
    return rows, curves


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ("stage", "test acc", "params", "bytes on disk", "latency/sample")
    body = [
        (
            r["stage"],
            f"{r['accuracy']:.4f}",
            f"{r['params']:,}",
            f"{r['bytes']:,}",
            f"{r['latency_us']:.2f} us",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body]
    notes = [r for r in rows if "sparsity" in r]
    for r in notes:
        out.append(
            f"({r['stage']}: params = non-zero parameters; weight sparsity "
            f"{r['sparsity']:.1%}; bytes = compressed npz of float32 weights)"
        )
    return "\n".join(out)


def _plot(
    curves: dict[str, dict[str, list[float]]],
    rows: list[dict[str, Any]],
    path: str,
    say: Callable[..., None],
) -> None:
    try:  # optional (the plot extra), and slow to import: only for --plot
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("--plot needs matplotlib (pip install 'pyfastopt[plot]'); no plot written")
        return
    fig = plt.figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.3])
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])]
    start = 0
    for name, h in curves.items():
        xs = np.arange(start + 1, start + len(h["loss"]) + 1)
        axes[0].plot(xs, h["loss"], label=name)
        axes[1].plot(xs, h["test_acc"], label=name)
        start += len(h["loss"])
    axes[0].set(
        title="training loss (cross-entropy, then distillation)",
        xlabel="epoch (all stages)",
        yscale="log",
    )
    axes[1].set(title="test accuracy", xlabel="epoch (all stages)")
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    axes[2].axis("off")
    cells = [
        [
            r["stage"],
            f"{r['accuracy']:.4f}",
            f"{r['params']:,}",
            f"{r['bytes']:,}",
            f"{r['latency_us']:.2f}",
        ]
        for r in rows
    ]
    table = axes[2].table(
        cellText=cells,
        loc="center",
        cellLoc="center",
        colLabels=["stage", "test accuracy", "parameters", "bytes on disk", "latency (us/sample)"],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(11)
    table.scale(1, 1.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    say(f"plot written to {path}")
