"""Training: config, presets, the epoch loop, atomic checkpoints and resume.

A run directory holds:

- ``model.keras``       the best model on the validation split (with its metadata and, at the end, metrics);
- ``checkpoint.keras``  the last finished epoch, with optimizer state and the loop's state, for ``--resume``;
- ``config.json``       the resolved training config;
- ``history.json``      loss and accuracy per epoch, training and validation;
- ``metrics.json``      validation and test metrics of ``model.keras``;
- ``logs/``             TensorBoard logs.

Every file is written to a temporary name and renamed, so a kill leaves no partial file, and an
interrupted run loses at most the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DEFAULT_VALIDATION, Dataset, atomic_write, load_dataset, split_validation
from ..models import (
    DEFAULT_MODEL,
    MODELS,
    ModelError,
    build_model,
    load_model,
    read_metadata,
    resolve_model_path,
    save_model,
    to_float32,
)
from ..reading.images import PREPROCESSING_VERSION
from ..reading.rules import RuleSettings

__all__ = ["PRESETS", "TrainConfig", "TrainError", "TrainResult", "calibrate", "fit_temperature", "train"]

MAX_EXTRA_DOMAIN = 4  # renders per extra image (`TrainConfig.extra_domain`)
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd", "adadelta")
SCHEDULES = ("constant", "cosine", "onecycle", "step")
PRECISIONS = ("auto", "float32", "bf16")
RUN_FILES = ("model.keras", "checkpoint.keras", "config.json", "history.json", "metrics.json")
RUN_JSON = tuple(name for name in RUN_FILES if name.endswith(".json"))  # written by `_atomic_json`


class TrainError(Exception):
    """A training run cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. ``None`` means: take it from the model's recipe."""

    model: str = DEFAULT_MODEL  # registry name, see `digitrec models`
    dataset: str = "mnist"  # "mnist", "fashion-mnist", or a directory of IDX files
    data_dir: str | None = None  # directory with the user's own copy of the dataset
    epochs: int | None = None  # full passes over the training split
    batch_size: int | None = None  # images per optimizer step
    optimizer: str | None = None  # adam | adamw | rmsprop | sgd | adadelta
    learning_rate: float | None = None  # peak learning rate, per step
    beta_1: float | None = None  # Adam/AdamW: decay of the gradient's running mean (Keras: 0.9)
    beta_2: float | None = None  # Adam/AdamW: decay of the squared gradient's running mean (Keras: 0.999)
    schedule: str | None = None  # constant | cosine | onecycle (20% warm-up, cosine down) | step (x0.7 per epoch)
    seed: int = 0  # seeds Python, NumPy and the backend, and the augmentation of each epoch
    augment: bool | None = None  # random affine transforms of the training images, redrawn every epoch
    rotation: float = 10.0  # degrees: largest rotation either way when augmenting
    shift: float = 0.1  # fraction of the image side: largest shift either way
    zoom: float = 0.1  # largest relative change of scale either way
    elastic: float = 0.0  # pixels: typical displacement of a smooth random distortion (0: none)
    shear: float = 0.0  # degrees: largest slant either way when augmenting (0: none)
    stroke: float = 0.0  # largest fraction of a one-pixel thickening or thinning of the strokes (0: none)
    class_weight: dict[int, float] | None = None  # loss weight per class, e.g. {9: 2.0}; others 1
    label_smoothing: float = 0.0  # mass moved from the true class to all classes
    # Decoupled weight decay (AdamW's): each step shrinks every weight by learning rate x this.
    # None: 5e-4 with adamw, none with the other optimizers.
    weight_decay: float | None = None
    ema: float = 0.0  # decay per step of a moving average of the weights, which validation and the saved models use
    validation: int = DEFAULT_VALIDATION  # last N training images held out for model selection
    patience: int | None = None  # stop after this many epochs without a better validation accuracy
    # Share of the epochs before which none is kept as the best: early in a one-cycle schedule the
    # learning rate is high and a noisy validation score can top the settled epochs by chance.
    select_from: float = 0.0
    precision: str = "auto"  # float32 | bf16 (mixed bfloat16) | auto: the faster one on this hardware
    limit: int | None = None  # train on the first N training images only (quick experiments, tests)
    domain: int | None = None  # add N training digits rendered as photos/canvases, then preprocessed
    negatives: int | None = None  # add N non-digits as an extra "not a digit" class (0: no such class)
    pairs: int | None = None  # with negatives: add N pairs of touching digits to the "not a digit" class
    styles: int | None = None  # add N training 0s, 1s and 7s with a slash, a flag, a crossbar (realdata.py)
    ensemble: int = 1  # train N members (seeds seed, seed+1, ...) and save one model averaging them
    extra_data: tuple[str, ...] = ()  # folders of labelled images (labels.csv) added to the training split
    extra_repeat: int = 3  # copies of each extra image in an epoch, each augmented anew (real data is scarce)
    # Renders of each extra set's images as photos, canvases, bitmaps, per image: 0.5 renders half of
    # them once, 2 renders each twice (in other styles and placements); at most MAX_EXTRA_DOMAIN.
    extra_domain: float = 0.0
    # Share of the rendered photos (of MNIST digits and of the extra sets) taken instead under a harder
    # condition (`synth.CONDITIONS`: a whole page, pencil, a desk, a shadow, a form cell, ruled paper, ...).
    conditions: float = 0.0
    validation_data: tuple[str, ...] = ()  # labelled folders that join validation: epoch choice, threshold
    init: str | None = None  # start from this model's weights (a .keras file or run; "default": the shipped one)
    distribute: bool = False  # data-parallel over every device the backend sees (keras.distribution, JAX only)

    def resolved(self) -> TrainConfig:
        """Fill unset fields from the model's recipe, then from general defaults; check every value."""
        if self.model not in MODELS:
            raise TrainError(f"unknown model {self.model!r}; registered: {', '.join(MODELS)}")
        recipe = MODELS[self.model].recipe
        general = {
            "epochs": 10,
            "batch_size": 128,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "schedule": "constant",
            "augment": False,
            "domain": 0,
            "negatives": 0,
            "pairs": 0,
            "styles": 0,
        }
        filled = {k: (recipe.get(k, general[k]) if getattr(self, k) is None else getattr(self, k)) for k in general}
        cfg = dataclasses.replace(self, **filled)
        cfg.check()
        return cfg

    def first_selectable(self) -> int:
        """The first epoch that may be kept as the best (``select_from`` of the epochs; at least 1)."""
        return max(1, math.ceil(self.select_from * (self.epochs or 1)))

    def check(self) -> None:
        problems = []
        if self.epochs is not None and self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            problems.append(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            problems.append(f"learning rate must be > 0, got {self.learning_rate}")
        for name in ("beta_1", "beta_2"):
            beta = getattr(self, name)
            if beta is not None and not 0 <= beta < 1:
                problems.append(f"{name} must be in [0, 1), got {beta}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            problems.append(f"ema must be in [0, 1) (0: none), got {self.ema}")
        if self.validation < 1:
            problems.append(f"validation size must be >= 1, got {self.validation}")
        if not 0 <= self.select_from < 1:
            problems.append(f"select from is a share of the epochs, in [0, 1); got {self.select_from}")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be >= 1, got {self.patience}")
        if self.ensemble < 1:
            problems.append(f"ensemble size must be >= 1, got {self.ensemble}")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if min(self.domain or 0, self.negatives or 0, self.pairs or 0, self.styles or 0) < 0:
            problems.append(
                f"domain, negatives, pairs and styles must be >= 0, got {self.domain}, {self.negatives}, "
                f"{self.pairs}, {self.styles}"
            )
        if self.elastic < 0 or self.rotation < 0 or not 0 <= self.shift < 1 or not 0 <= self.zoom < 1:
            problems.append(
                "augmentation: rotation and elastic must be >= 0, shift and zoom in [0, 1); got "
                f"rotation {self.rotation}, shift {self.shift}, zoom {self.zoom}, elastic {self.elastic}"
            )
        if not 0 <= self.shear < 45 or not 0 <= self.stroke <= 1:
            problems.append(
                f"augmentation: shear must be in [0, 45) degrees and stroke in [0, 1]; got "
                f"shear {self.shear}, stroke {self.stroke}"
            )
        for name in ("elastic", "shear", "stroke"):
            if getattr(self, name) > 0 and self.augment is False:
                problems.append(f"--{name} is part of the augmentation: add --augment, or leave --{name} out")
        if self.extra_repeat < 1:
            problems.append(f"extra repeat must be >= 1, got {self.extra_repeat}")
        if not 0 <= self.conditions <= 1:
            problems.append(f"conditions is a share of the rendered photos, in [0, 1]; got {self.conditions}")
        if not 0 <= self.extra_domain <= MAX_EXTRA_DOMAIN:
            problems.append(
                f"extra domain is renders per image of each extra set, in [0, {MAX_EXTRA_DOMAIN}]; got "
                f"{self.extra_domain}"
            )
        if self.distribute:
            import keras

            if keras.backend.backend() != "jax":
                problems.append(
                    f"--distribute trains with keras.distribution, which needs the JAX backend "
                    f"(KERAS_BACKEND=jax); this is {keras.backend.backend()}"
                )
        overlap = {os.path.realpath(p) for p in self.extra_data} & {os.path.realpath(p) for p in self.validation_data}
        if overlap:
            problems.append(f"{', '.join(sorted(overlap))}: both training and validation data; a set is one or other")
        if (self.pairs or 0) > 0 and self.negatives == 0:
            problems.append("touching pairs go into the 'not a digit' class: add --negatives N, or leave --pairs out")
        if self.conditions > 0 and not self.domain and not self.extra_domain:
            problems.append("--conditions restyles the rendered photos: add --domain N or --extra-domain F")
        for k, w in (self.class_weight or {}).items():
            if not (isinstance(k, int) and k >= 0) or not w > 0:
                problems.append(f"class weight {k}={w}: the class must be an index >= 0 and the weight > 0")
        if problems:
            raise TrainError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.class_weight:
            d["class_weight"] = {str(k): v for k, v in self.class_weight.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("class_weight"):
            d["class_weight"] = {int(k): float(v) for k, v in d["class_weight"].items()}
        for name in ("extra_data", "validation_data"):  # JSON lists
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d).resolved()  # fields added since the run was saved take their defaults


# Named configurations; flags given with --preset override them. Figures: README, "Accuracy and
# training speed", from benchmarks/train_speed.py on 2 Xeon cores.
PRESETS: dict[str, dict[str, Any]] = {
    # The default model: digitnet's recipe (augmentation, rendered digits, non-digits), 36 epochs,
    # label smoothing; about 11 minutes in all on 2 cores (14-15.5 before the fixed costs of fit() were
    # cut; README). 36 epochs: validation 99.70/99.70/99.72% (seeds 0-2, an older recipe), against
    # 99.68/99.72/99.64% with 30.
    "best": {"model": "digitnet", "epochs": 36, "label_smoothing": 0.1},
    # The middle point: speednet, 6 augmented epochs, label smoothing: about 99.5% in about 22 s (README).
    # Chosen on validation (3 seeds): 99.52% against 99.51% for fastnet 6 epochs without augmentation
    # and 99.43% with it.
    "balanced": {"model": "speednet", "epochs": 6, "augment": True, "label_smoothing": 0.1},
    # One epoch of fastnet in mixed bfloat16 with label smoothing: about 99.1% in about 2.5 s (README).
    "fast": {"model": "fastnet", "epochs": 1, "label_smoothing": 0.1},
    # What `make run` trains: the Keras "simple MNIST convnet" for 3 epochs with a one-cycle schedule.
    "quick": {"model": "cnn", "epochs": 3, "batch_size": 128, "schedule": "onecycle"},
    # Fine-tuning a trained model (--init, the shipped one by default) on your own writers' digits
    # (--extra-data): a few epochs at a low rate over them, each also rendered three times as photos,
    # canvases and bitmaps, and 10,000 MNIST training digits, with non-digits so that the "not a
    # digit" class is kept (docs/training.md, Fine-tuning). 6 epochs with the renders: cvl-valid
    # 97.10% read right in 3 min 56 s, against 96.51% with 4 epochs and none (docs/benchmarks.md).
    "finetune": {
        "init": "default",
        "epochs": 6,
        "extra_domain": 3.0,
        "learning_rate": 3e-4,
        "schedule": "cosine",
        "augment": True,
        "limit": 10000,
        "domain": 0,
        "negatives": 2000,
        "label_smoothing": 0.1,
    },
}


@dataclass
class TrainResult:
    """What a run produced: where, how well, how fast."""

    run_dir: Path
    model_path: Path
    config: TrainConfig
    history: dict[str, list[float]]
    metrics: dict[str, Any]  # {"validation": {...}, "test": {...}} from evaluate.classification_metrics
    train_seconds: float  # the fit loop alone, summed over epochs (resumed runs included)
    device: str
    best_epoch: int
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON summary line of `digitrec train --json`."""
        return {
            "run_dir": str(self.run_dir),
            "model_path": str(self.model_path),
            "model": self.config.model,
            "epochs_run": len(self.history.get("loss", [])),
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.train_seconds, 3),
            "val_accuracy": self.metrics["validation"]["accuracy"],
            "test_accuracy": self.metrics["test"]["accuracy"],
            "device": self.device,
            "precision": self.extra.get("precision"),
        }


# --- hardware --------------------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def configure_device() -> tuple[str, bool]:
    """Set up the backend's accelerator, if any. Returns (a description for people, is_gpu).

    TensorFlow is told to grow GPU memory as needed rather than take all of it; JAX likewise
    (through XLA_PYTHON_CLIENT_PREALLOCATE, which only helps when set before JAX starts).
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialized: growth can no longer be changed, and that is harmless
        if gpus:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
            return f"GPU ({name}, TensorFlow)", True
    elif backend == "jax":
        import jax

        devices = jax.devices()
        if devices and devices[0].platform == "gpu":
            return f"GPU ({devices[0].device_kind}, JAX)", True
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name(0)}, PyTorch)", True
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {backend})", False


def pick_precision(requested: str, backend: str, is_gpu: bool, model: str = DEFAULT_MODEL) -> str:
    """'auto' picks bf16 where it is faster: on GPUs, and on CPUs with AMX for the models whose
    training was measured faster in bf16 with TensorFlow (ModelSpec.cpu_bf16, benchmarks/precision.py).
    Elsewhere float32.
    """
    if requested != "auto":
        return requested
    if is_gpu:
        return "bf16"
    if backend == "tensorflow" and MODELS[model].cpu_bf16 and "amx_bf16" in _cpu_flags():
        return "bf16"
    return "float32"


def machine_description() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


# --- augmentation ----------------------------------------------------------------------------------


def augment_images(
    x: np.ndarray,
    rng: np.random.Generator,
    rotation: float = 10.0,
    shift: float = 0.1,
    zoom: float = 0.1,
    elastic: float = 0.0,
    shear: float = 0.0,
    stroke: float = 0.0,
) -> np.ndarray:
    """Random affine transform of each uint8 image (n, h, w): rotation (deg), shift (fraction), zoom,
    and with ``shear`` > 0 a slant of up to that many degrees either way; with ``elastic`` > 0 a smooth
    random distortion on top (Simard et al., 2003), its displacements about ``elastic`` pixels
    (standard deviation). One interpolation per image. Then, with ``stroke`` > 0, each image's strokes
    are thickened or thinned by a random fraction (up to ``stroke``) of a one-pixel dilation or erosion."""
    import cv2

    n, h, w = x.shape
    angles = rng.uniform(-rotation, rotation, n)
    scales = rng.uniform(1 - zoom, 1 + zoom, n)
    shifts = rng.uniform(-shift, shift, (n, 2)) * (w, h)
    # Drawn only when asked for, after the draws above: without them, the same seed gives the same images.
    shears = rng.uniform(-shear, shear, n) if shear > 0 else np.zeros(n)
    strokes = rng.uniform(-stroke, stroke, n).astype(np.float32) if stroke > 0 else None
    out = np.empty_like(x)
    center = (w / 2 - 0.5, h / 2 - 0.5)
    if elastic <= 0:
        for i in range(n):
            m = _affine(center, angles[i], scales[i], shifts[i], shears[i])
            out[i] = cv2.warpAffine(x[i], m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        return out if strokes is None else restroke(out, strokes)
    # Where each output pixel samples the input: the inverse affine map plus a displacement field,
    # bilinearly interpolated from random displacements at ELASTIC_GRID x ELASTIC_GRID control points.
    grid = rng.normal(0.0, elastic, (n, 2, ELASTIC_GRID, ELASTIC_GRID)).astype(np.float32)
    uy, ux = _interpolation_matrix(h, ELASTIC_GRID), _interpolation_matrix(w, ELASTIC_GRID)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    inverse = np.stack(
        [cv2.invertAffineTransform(_affine(center, angles[i], scales[i], shifts[i], shears[i])) for i in range(n)]
    ).astype(np.float32)  # (n, 2, 3): where each output pixel comes from
    for start in range(0, n, 4096):  # (chunk, h, w) maps: about 25 MB at a time for 28x28
        k = slice(start, min(start + 4096, n))
        a = inverse[k, :, :, None, None]  # (chunk, 2, 3, 1, 1)
        field = uy @ grid[k] @ ux.T  # (chunk, 2, h, w)
        maps = a[:, :, 0] * xx + a[:, :, 1] * yy + a[:, :, 2] + field
        for j, i in enumerate(range(k.start, k.stop)):
            out[i] = cv2.remap(x[i], maps[j, 0], maps[j, 1], cv2.INTER_LINEAR, borderValue=0)
    return out if strokes is None else restroke(out, strokes)


def restroke(x: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Thicken (``amount`` > 0) or thin (< 0) the strokes of each uint8 image (n, h, w): a blend, by
    ``|amount|`` (at most 1), towards the image's grey-level dilation or erosion by one pixel (over the
    pixel and its four neighbours)."""
    out = np.empty_like(x)
    for start in range(0, len(x), 8192):  # five (chunk, h, w) float32 copies: about 130 MB at a time for 28x28
        k = slice(start, min(start + 8192, len(x)))
        f = x[k].astype(np.float32)
        p = np.pad(f, ((0, 0), (1, 1), (1, 1)))
        near = np.stack([f, p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]])
        t = amount[k, None, None]
        target = np.where(t > 0, near.max(axis=0), near.min(axis=0))
        out[k] = np.clip(np.rint(f + np.abs(t) * (target - f)), 0, 255).astype(np.uint8)
    return out


def _affine(
    center: tuple[float, float], angle: float, scale: float, shift: np.ndarray, shear: float = 0.0
) -> np.ndarray:
    """The forward 2x3 map of a slant by ``shear`` degrees (the top of the image to the right for > 0),
    then a rotation by ``angle`` and a zoom by ``scale`` about ``center``, then a shift."""
    import cv2

    m = cv2.getRotationMatrix2D(center, float(angle), float(scale))
    if shear:
        k = np.tan(np.radians(shear))
        m = m @ np.array([[1.0, -k, k * center[1]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m[:, 2] += shift
    return m


ELASTIC_GRID = 5  # control points per side of the elastic displacement field (about 7 px apart in 28)


def _interpolation_matrix(size: int, points: int) -> np.ndarray:
    """(size, points): linear interpolation from ``points`` evenly spread control points to ``size`` pixels."""
    pos = np.linspace(0, points - 1, size)
    lo = np.minimum(pos.astype(int), points - 2)
    frac = (pos - lo).astype(np.float32)
    u = np.zeros((size, points), np.float32)
    u[np.arange(size), lo] = 1 - frac
    u[np.arange(size), lo + 1] = frac
    return u


# --- the loop --------------------------------------------------------------------------------------


def _optimizer(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    import keras

    lr: Any = cfg.learning_rate
    total = steps_per_epoch * cfg.epochs
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total, alpha=0.01)
    elif cfg.schedule == "onecycle":
        warm = max(1, int(0.2 * total))
        lr = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 25,
            max(1, total - warm),
            alpha=0.002,
            warmup_target=cfg.learning_rate,
            warmup_steps=warm,
        )
    elif cfg.schedule == "step":  # pytorch/examples mnist: StepLR(gamma=0.7) every epoch
        lr = keras.optimizers.schedules.ExponentialDecay(cfg.learning_rate, steps_per_epoch, 0.7, staircase=True)
    # Polyak averaging: the optimizer keeps a moving average of the weights (see `_ema_swap`).
    extra: dict[str, Any] = {"use_ema": True, "ema_momentum": cfg.ema} if cfg.ema else {}
    decay = cfg.weight_decay if cfg.weight_decay is not None else (5e-4 if cfg.optimizer == "adamw" else 0.0)
    # Keras applies weight decay the same way for every optimizer: decoupled, as AdamW does. AdamW always
    # gets ours (its own default, 0.004, is not ours); the others only when there is some.
    if decay or cfg.optimizer == "adamw":
        extra["weight_decay"] = decay
    return {
        "adam": lambda: keras.optimizers.Adam(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, **extra),
        "adamw": lambda: keras.optimizers.AdamW(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, **extra),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, **extra),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **extra),
        "adadelta": lambda: keras.optimizers.Adadelta(lr, **extra),
    }[cfg.optimizer]()


def _ema_swap(cfg: TrainConfig, resumed: bool) -> list[Any]:
    """With ``cfg.ema``: Keras' callback that puts the averaged weights in the model for validation and
    at each epoch's end (so the bookkeeping after it saves them) and the trained ones back to go on.

    A checkpoint is saved with the averaged weights in the model and the trained ones in the
    optimizer's average slots, so a resumed run starts with them swapped."""
    import keras

    if not cfg.ema:
        return []
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    swap._ema_weights_in_model = resumed  # Keras' own flag: swap back at the first epoch's start
    return [swap]


def _compile(model: Any, optimizer: Any, cfg: TrainConfig) -> None:
    import keras

    # XLA made conv training ~3.5x slower with TF on CPU (measured, see README); JAX always compiles.
    jit = "auto" if keras.backend.backend() == "jax" else False
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit,
    )


def _build_state(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Create the optimizer's and the metrics' variables before ``fit()``.

    Keras creates them in the first training step otherwise, and TensorFlow traces a step function
    that creates variables twice: 1.16 s -> 0.63 s for the first ``fit()`` step of fastnet.
    """
    if not model.optimizer.built:  # a resumed run's optimizer comes built, with its state, from the checkpoint
        model.optimizer.build(model.trainable_variables)
    model.compute_metrics(x, y, y, None)  # the labels stand in for predictions: no forward pass
    model.reset_metrics()


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2).encode())


def _one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype="float32")[y]


def _fashion_split(log: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Fashion-MNIST training images for negatives: all but the last 5,000, which validate rejection."""
    from ..data import DataError

    try:
        fashion = load_dataset("fashion-mnist").x_train
    except DataError as e:
        log(f"Fashion-MNIST unavailable ({e}); negatives are letters, doodles and noise only")
        return None, None
    return fashion[:-5000], fashion[-5000:]


def _real_image_data(
    cfg: TrainConfig, x_tr: np.ndarray, y_tr: np.ndarray, num_digits: int, log: Any
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Extra training data for real images (see realdata.py): rendered digits and non-digits."""
    if not (cfg.domain or cfg.negatives or cfg.styles):
        return None, None
    from . import realdata

    rng = np.random.default_rng([cfg.seed, 7])
    xs, ys = [], []
    if cfg.domain:
        log(f"Rendering {min(cfg.domain, len(x_tr))} training digits as photos, canvas drawings and bitmaps ...")
        xd, yd = realdata.domain_digits(x_tr, y_tr, cfg.domain, rng, conditions=cfg.conditions)
        xs.append(xd)
        ys.append(yd)
    if cfg.styles:
        log(f"Drawing {cfg.styles} training 0s, 1s and 7s with a slash, a flag or a crossbar ...")
        xd, yd = realdata.styled_digits(x_tr, y_tr, cfg.styles, rng)
        xs.append(xd)
        ys.append(yd)
    if cfg.negatives:
        log(f"Preparing {cfg.negatives} non-digits for the 'not a digit' class ...")
        xs.append(realdata.negatives(cfg.negatives, rng, _fashion_split(log)[0]))
        ys.append(np.full(cfg.negatives, num_digits, np.uint8))
        if cfg.pairs:
            log(f"Rendering {cfg.pairs} pairs of touching digits as non-digits ...")
            xs.append(realdata.touching_pairs(x_tr, cfg.pairs, rng))
            ys.append(np.full(cfg.pairs, num_digits, np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def _rendered_extra(cfg: TrainConfig, extra_sets: list[Any], log: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each extra set's images rendered as photos, canvas drawings and small bitmaps and preprocessed
    again (`realdata.domain_digits`), ``cfg.extra_domain`` renders per image (each whole pass renders
    every image once more, in a style and placement of its own; a fraction renders that share of them):
    other writers' digits as other devices show them, which neither the extra sets (one device each)
    nor the rendered MNIST digits (MNIST's writers) hold."""
    from . import realdata

    rng = np.random.default_rng([cfg.seed, 8])
    xs, ys = [], []
    for s in extra_sets:
        left = round(cfg.extra_domain * len(s.y))
        while left > 0:
            # at most every image once a pass
            x, y = realdata.domain_digits(s.x, s.y, left, rng, conditions=cfg.conditions)
            xs.append(x)
            ys.append(y)
            left -= len(y)
    log(f"Rendered {sum(len(y) for y in ys)} images of the extra data as photos, canvas drawings and bitmaps")
    if not xs:
        return np.empty((0, 28, 28), np.uint8), np.empty(0, np.uint8)
    return np.concatenate(xs), np.concatenate(ys)


def _labelled(path: str, log: Any) -> Any:
    """A labelled folder (`data.load_labelled`), preprocessed, with a line in the log."""
    from ..data import load_labelled

    labelled = load_labelled(path, verbose=True)
    writers = f", {len(set(labelled.writers))} writers" if labelled.writers else ""
    log(f"{path}: {len(labelled.y)} labelled images{writers}")
    return labelled


def _distribute(cfg: TrainConfig, log: Any) -> None:
    """With ``cfg.distribute``: every variable and batch from here on is laid out data-parallel over
    the backend's devices (`keras.distribution.DataParallel`: weights replicated, each batch split)."""
    import keras

    if not cfg.distribute:
        return
    devices = keras.distribution.list_devices()
    if cfg.batch_size is not None and cfg.batch_size % len(devices):
        raise ValueError(f"batch size {cfg.batch_size} does not split over {len(devices)} devices")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    log(f"data-parallel over {len(devices)} devices: {', '.join(devices)}")


def _initial_model(cfg: TrainConfig, num_classes: int, precision: str, log: Any) -> tuple[Any, dict[str, Any] | None]:
    """A new model of ``cfg.model``, or with ``cfg.init`` a copy of that trained model to fine-tune;
    and, then, the card of the model it starts from (`_init_card`)."""
    _distribute(cfg, log)
    if cfg.init is None:
        return build_model(cfg.model, num_classes, precision), None
    from ..reading.recognizer import default_model_path

    path = default_model_path() if cfg.init == "default" else resolve_model_path(cfg.init)
    if path is None:
        raise TrainError("--init default: this build ships no model; pass --init MODEL")
    model, meta = load_model(path)
    outputs = int(model.outputs[0].shape[-1])
    if outputs != num_classes:
        raise TrainError(
            f"--init {path}: the model has {outputs} outputs but this run trains {num_classes} classes "
            "(a model with a 'not a digit' output needs --negatives N > 0, one without needs --negatives 0)"
        )
    log(f"Starting from {path} ({meta.get('architecture', '?')})")
    return model, _init_card(cfg.init, meta)


def _rejection_data(cfg: TrainConfig, x_val: np.ndarray, y_val: np.ndarray, log: Any) -> dict[str, np.ndarray]:
    """Validation images for choosing the "not a digit" threshold: digits rendered as real images
    (from the validation split) and non-digits rendered as real images (held-out Fashion-MNIST,
    held-out fonts, other seeds). Non-digits that come out as an empty field (most blank pages) are
    left out: `Recognizer` rejects those without asking the model."""
    from . import realdata

    rng = np.random.default_rng([cfg.seed, 8])
    negatives = realdata.validation_negatives(max(500, (cfg.negatives or 0) // 10), rng, _fashion_split(log)[1])
    negatives = negatives[negatives.reshape(len(negatives), -1).any(axis=1)]
    # 4,000 rendered digits: the threshold is one of their 99.5th-99.9th percentiles (20 to 4 images
    # from the top). With 1,000 (5 from the top) the 99.5th varied from 0.05 to 0.28 between seeds of
    # the same recipe.
    domain, domain_labels = realdata.domain_digits(x_val, y_val, 4000, rng)
    for path in cfg.validation_data:  # real digits of unseen writers stand for real inputs too
        labelled = _labelled(path, log)
        domain, domain_labels = np.concatenate([domain, labelled.x]), np.concatenate([domain_labels, labelled.y])
    if cfg.pairs:  # drawn last: the other validation images stay those of a run without pairs
        negatives = np.concatenate([negatives, realdata.touching_pairs(x_val, max(100, cfg.pairs // 10), rng)])
    return {"val_negatives": negatives, "val_domain": domain, "val_domain_labels": domain_labels}


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The temperature T that minimises the negative log-likelihood of the labels ``y`` under
    ``calibrated(p, T)``: a golden-section search over log T in [1/20, 20] (the NLL is unimodal in T)."""
    from ..reading.recognizer import calibrated

    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-np.mean(np.log(np.maximum(calibrated(p, float(np.exp(log_t)))[rows, y], 1e-30))))

    lo, hi = np.log(1 / 20), np.log(20)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):  # the bracket shrinks to 0.618^40 of its width: far below any useful precision
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


# The percentiles of the rendered validation digits' P(not a digit) that may become the threshold:
# at most 0.5% of them rejected (half the 1% allowance, a margin for new data), at least 0.1%.
REJECT_PERCENTILES = tuple(round(0.995 + 0.001 * k, 3) for k in range(5))
# What an accepted non-digit costs against a misread or rejected digit, when choosing among them: the
# ratio of the allowances (at most 1% of real digits rejected, at least 90% of non-digits
# rejected, so 10% may get through). A plain sum of the two rates (weight 1, the rule until
# 2026-11-22) counted a tenth of the non-digit allowance as much as the whole digit allowance.
NON_DIGIT_WEIGHT = 0.1


def _reject_threshold(
    score_rendered: np.ndarray,
    right_rendered: np.ndarray,
    score_neg: np.ndarray,
    score_clean: np.ndarray,
    log: Any,
) -> dict[str, float]:
    """The "not a digit" threshold, chosen on validation data.

    Candidates: the 99.5th to 99.9th percentiles of P(not a digit) over the validation digits rendered
    as photos and drawings (the rendered digits stand for real inputs; clean MNIST digits are rejected
    far more rarely, so mixing them in would hide the real rate). At most 1% of real digits may be
    rejected; half of that on validation leaves a margin for new data. Of the candidates, the one with
    the lowest cost on validation: the rate of rendered digits misread or rejected (``right_rendered``
    says which the model reads right), plus ``NON_DIGIT_WEIGHT`` times the rate of non-digits accepted,
    each rate weighed by the issue's allowance for it; on a tie, the lower threshold. Scores: the
    calibrated P(not a digit) of the rendered validation digits, the validation non-digits and the
    clean validation digits.
    """
    right = np.asarray(right_rendered, bool)
    candidates = []
    for q in REJECT_PERCENTILES:
        t = float(np.quantile(score_rendered, q))
        digit_errors = float(np.mean((score_rendered >= t) | ~right))
        candidates.append((digit_errors + NON_DIGIT_WEIGHT * float(np.mean(score_neg < t)), t, q, digit_errors))
    # min() keeps the first of equal keys: the lowest percentile (rounding hides float noise in the sums)
    cost, threshold, q, digit_errors = min(candidates, key=lambda c: round(c[0], 9))
    result = {
        "threshold": threshold,
        "percentile": round(100 * q, 1),
        "validation_cost": cost,
        "validation_digit_errors": digit_errors,
        "validation_digits_rejected": float(np.mean(score_rendered >= threshold)),
        "validation_clean_digits_rejected": float(np.mean(score_clean >= threshold)),
        "validation_non_digits_rejected": float(np.mean(score_neg >= threshold)),
    }
    log(
        f"Rejection threshold {threshold:.3f} (the {100 * q:.1f}th percentile): rejects "
        f"{result['validation_digits_rejected']:.2%} of rendered validation digits, "
        f"{result['validation_clean_digits_rejected']:.2%} of clean ones, and "
        f"{result['validation_non_digits_rejected']:.2%} of validation non-digits"
    )
    return result


def _steps(n: int, batch_size: int) -> int:
    """Batches in an epoch of ``n`` images (the last one may be short)."""
    return -(-n // batch_size)


def _epoch_batches(
    x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, cfg: TrainConfig, first_epoch: int
) -> tuple[Any, int | None]:
    """The training batches, shuffled and augmented anew at every epoch, and the ``steps_per_epoch``
    to give ``fit()`` with them.

    One ``fit()`` call then runs all the epochs. (With one call per epoch, TensorFlow's input
    iterator was torn down after each, and that teardown sat idle for 7-10 s after about half the
    epochs: measured 2026-11-21 with a one-off timing script, no CPU used; epochs of digitnet went from ~19 s to ~16 s.)
    Epoch k's images are the same whatever epoch the run started or resumed at.

    A PyDataset goes without ``steps_per_epoch``: given it, Keras keeps for the next epoch the
    iterator it opens at the end of an epoch, before ``on_epoch_end`` redraws, so a prefetching
    pipeline could serve old batches (read in Keras' epoch_iterator.py; a test checks that every
    epoch trains on one whole draw).
    """
    import keras

    if not cfg.augment and keras.backend.backend() == "tensorflow":
        return _tf_epoch_batches(x, y, sample_weight, cfg, first_epoch), _steps(len(x), cfg.batch_size)
    return _py_epoch_batches(x, y, sample_weight, cfg, first_epoch), None


def _py_epoch_batches(
    x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, cfg: TrainConfig, first_epoch: int
) -> Any:
    import keras

    class EpochBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = first_epoch
            self._draw()

        def _draw(self) -> None:
            rng = np.random.default_rng([cfg.seed, self.epoch])
            self.x = (
                augment_images(
                    x,
                    rng,
                    rotation=cfg.rotation,
                    shift=cfg.shift,
                    zoom=cfg.zoom,
                    elastic=cfg.elastic,
                    shear=cfg.shear,
                    stroke=cfg.stroke,
                )
                if cfg.augment
                else x
            )
            self.order = rng.permutation(len(x))

        def __len__(self) -> int:
            return _steps(len(x), cfg.batch_size)

        def __getitem__(self, i: int) -> tuple:
            idx = self.order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            # uint8 images: the model casts to float32 itself, and the input pipeline moves 4x fewer bytes.
            batch = (self.x[idx], y[idx])
            return batch if sample_weight is None else (*batch, sample_weight[idx])

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._draw()

    return EpochBatches()


def _tf_epoch_batches(
    x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, cfg: TrainConfig, first_epoch: int
) -> Any:
    """Without augmentation on TensorFlow: the PyDataset's batches of each epoch, in its order, as a
    native tf.data pipeline of all the remaining epochs (``fit`` then needs ``steps_per_epoch``).
    ``fit()`` shuffles the order of a PyDataset's batches as well; this pipeline keeps its own.

    A PyDataset reaches TensorFlow through ``Dataset.from_generator``, whose teardown at the end of
    ``fit()`` stalled for 0.3-1.8 s in about half of the one-epoch runs measured (a one-off timing,
    fresh processes); a one-epoch ``fast`` run trains for about 2.5 s.
    """
    import tensorflow as tf

    # EpochBatches' order for each epoch, which is its first draw when nothing is augmented.
    epochs = range(first_epoch, cfg.epochs)
    orders = np.stack([np.random.default_rng([cfg.seed, e]).permutation(len(x)) for e in epochs]).astype("int32")
    arrays = tuple(tf.constant(a) for a in (x, y, sample_weight) if a is not None)
    # Plain TensorFlow functions: autograph's conversion of the lambdas took 0.3 s.
    batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        tf.autograph.experimental.do_not_convert(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(cfg.batch_size)
        )
    )
    gather = tf.autograph.experimental.do_not_convert(lambda idx: tuple(tf.gather(a, idx) for a in arrays))
    return batches.map(gather).prefetch(2)


def _tensorboard(log_dir: Path) -> list[Any]:
    import keras

    try:
        import tensorflow  # noqa: F401  (the callback writes through tf.summary)
    except ImportError:
        return []

    class EpochTensorBoard(keras.callbacks.TensorBoard):
        """Keras' TensorBoard callback, which writes once per epoch (update_freq="epoch") yet still
        calls tf.summary.scalar for every metric after every batch, with no writer active: 1.7 ms a
        batch, 0.36 s of a one-epoch fast run (cProfile)."""

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            pass

    return [EpochTensorBoard(log_dir=str(log_dir), write_graph=False)]


def train(
    config: TrainConfig | None = None,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: int | str = "auto",
    data: Dataset | None = None,
    callbacks: list[Any] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a model and write a run directory; return the result with validation and test metrics.

    ``train(model="cnn", epochs=3)`` is the same as ``train(TrainConfig(model="cnn", epochs=3))``.
    With ``resume=True``, ``out`` must be an interrupted run: its config and checkpoint are used.
    ``verbose``: 0 silent, 1 a progress bar per epoch, 2 one line per epoch, "auto" 1 on a terminal.
    ``data``: an already loaded `Dataset` to use instead of loading ``config.dataset``.
    ``callbacks``: more Keras callbacks for the ``fit()`` call that runs all the epochs.
    """
    import keras

    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    cfg, run_dir = _run_config(config, out, resume, overwrite, overrides)
    log = print if verbose else (lambda *a, **k: None)
    ds = data or load_dataset(cfg.dataset, cfg.data_dir, verbose=bool(verbose))
    if cfg.ensemble > 1:
        return _train_ensemble(cfg, run_dir, ds, verbose, log, callbacks)

    device, is_gpu = configure_device()
    precision = pick_precision(cfg.precision, keras.backend.backend(), is_gpu, cfg.model)
    log(f"Training {cfg.model} on {device}, precision {precision}, Keras {keras.__version__}")
    arrays = _training_arrays(cfg, ds, log)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    model, progress = _start_or_resume(cfg, run_dir, ds, arrays, precision, resume, log)
    _atomic_json(run_dir / "config.json", cfg.to_json())

    book = _bookkeeping(cfg, run_dir, _metadata(cfg, ds, cfg.model, device, precision, progress.init), progress, log)
    if progress.stopped_before:
        log(f"The run had stopped early (no better validation accuracy for {cfg.patience} epochs): nothing to train")
        book.stopped_early = True
    elif progress.start_epoch < cfg.epochs:
        _build_state(model, arrays.x[:2], arrays.y1[:2])
        batches, steps = _epoch_batches(arrays.x, arrays.y1, arrays.sample_weight, cfg, progress.start_epoch)
        book.fit_start = time.perf_counter()
        model.fit(
            batches,
            epochs=cfg.epochs,
            initial_epoch=progress.start_epoch,
            steps_per_epoch=steps,
            # A PyDataset's batches are also taken in an order Keras shuffles (the shipped model was
            # trained so); a tf.data pipeline brings its own order, and Keras warns if asked to shuffle.
            shuffle=steps is None,
            validation_data=(arrays.x_val, arrays.y_val1),
            validation_batch_size=1000,  # Keras' default, 32, made validation 0.4 s of a 2.5 s fast run
            callbacks=[
                *_tensorboard(run_dir / "logs"),
                *(callbacks or []),
                *_ema_swap(cfg, progress.start_epoch > 0),
                book,
            ],
            verbose=verbose,
        )
        progress.train_seconds += time.perf_counter() - book.fit_start - book.seconds
    _atomic_json(run_dir / "history.json", progress.history)  # also after a resume with no epoch left to train

    # Report the selected (best on validation) model, on validation and test: digits only.
    best_path = run_dir / "model.keras"
    model, meta = load_model(best_path)
    meta.update(train_seconds=progress.train_seconds, prepare_seconds=arrays.prepare_seconds, history=progress.history)
    metrics = _finish(model, meta, cfg, ds, run_dir, log)
    log(
        f"Best epoch {progress.best_epoch}: validation accuracy {metrics['validation']['accuracy']:.4f}, "
        f"test accuracy {metrics['test']['accuracy']:.4f}; fit loop {progress.train_seconds:.1f} s"
    )
    return TrainResult(
        run_dir=run_dir,
        model_path=best_path,
        config=cfg,
        history=progress.history,
        metrics=metrics,
        train_seconds=progress.train_seconds,
        device=device,
        best_epoch=progress.best_epoch,
        stopped_early=book.stopped_early,
        extra={"precision": precision},
    )


def _run_config(
    config: TrainConfig | None, out: str | os.PathLike | None, resume: bool, overwrite: bool, overrides: dict
) -> tuple[TrainConfig, Path]:
    """The run's config and directory: a resumed run's own, or a new one (an old run there removed with
    ``overwrite``); either way without the temporary files a killed write left."""
    if resume:
        if out is None:
            raise TrainError("resume needs the run directory to continue")
        run_dir = Path(out)
        if not (run_dir / "config.json").is_file():
            raise TrainError(f"{run_dir}: nothing to resume (no config.json); start a new run instead")
        cfg = TrainConfig.from_json(json.loads((run_dir / "config.json").read_text()))
        if config is not None or overrides:
            raise TrainError("--resume continues a run with its own config; do not pass other training options")
    else:
        cfg = dataclasses.replace(config or TrainConfig(), **overrides).resolved()
        run_dir = Path(out) if out is not None else Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / "config.json").exists():
            if not overwrite:
                raise TrainError(
                    f"{run_dir} already holds a run. Continue it with --resume, choose another --out, "
                    "or pass --overwrite."
                )
            for name in RUN_FILES:  # nothing of the old run may be mistaken for the new one
                (run_dir / name).unlink(missing_ok=True)
            for member in run_dir.glob("member-*"):
                shutil.rmtree(member)
            shutil.rmtree(run_dir / "logs", ignore_errors=True)  # TensorBoard would mix both runs' curves
    # A kill during a write leaves its temporary file (the real one is intact): `save_model`'s
    # ".model-XXXX.keras", `_atomic_json`'s "NAME.json.XXXX.tmp" for the run's own JSON files
    # (".NAME.tmp" in runs written by earlier versions). Only those: `digitrec evaluate` may be writing its
    # own file into the run meanwhile.
    stale_json = [p for name in RUN_JSON for p in run_dir.glob(f"{name}.*.tmp")]
    for stale in [*run_dir.glob(".*-*.keras"), *run_dir.glob(".*.tmp"), *stale_json]:
        stale.unlink(missing_ok=True)
    return cfg, run_dir


@dataclass
class _Arrays:
    """What `fit` trains and validates on: the training split with the rendered, non-digit and labelled
    images added, one-hot labels, and the validation split with the labelled validation sets."""

    x: np.ndarray
    y: np.ndarray
    y1: np.ndarray
    sample_weight: np.ndarray | None
    x_val: np.ndarray
    y_val1: np.ndarray
    num_classes: int
    prepare_seconds: float


def _training_arrays(cfg: TrainConfig, ds: Dataset, log: Any) -> _Arrays:
    num_digits = len(ds.class_names)
    (x_tr, y_tr), (x_val, y_val) = split_validation(ds.x_train, ds.y_train, cfg.validation)
    if cfg.limit:
        x_tr, y_tr = x_tr[: cfg.limit], y_tr[: cfg.limit]
    t_prep = time.perf_counter()
    x_extra, y_extra = _real_image_data(cfg, x_tr, y_tr, num_digits, log)
    if x_extra is not None:
        x_tr, y_tr = np.concatenate([x_tr, x_extra]), np.concatenate([y_tr, y_extra])
    extra_sets = [_labelled(path, log) for path in cfg.extra_data]
    if extra_sets:
        x_tr = np.concatenate([x_tr, *(s.x for s in extra_sets for _ in range(cfg.extra_repeat))])
        y_tr = np.concatenate([y_tr, *(s.y for s in extra_sets for _ in range(cfg.extra_repeat))])
        if cfg.extra_domain:
            x_rendered, y_rendered = _rendered_extra(cfg, extra_sets, log)
            x_tr, y_tr = np.concatenate([x_tr, x_rendered]), np.concatenate([y_tr, y_rendered])
    validation_sets = [_labelled(path, log) for path in cfg.validation_data]
    x_fit_val = np.concatenate([x_val, *(s.x for s in validation_sets)])  # the epochs are chosen on all of it
    y_fit_val = np.concatenate([y_val, *(s.y for s in validation_sets)])
    prepare_seconds = time.perf_counter() - t_prep
    num_classes = num_digits + (1 if cfg.negatives else 0)  # the last class is "not a digit"
    sample_weight = None
    if cfg.class_weight:
        weights = np.ones(num_classes, dtype="float32")
        for k, w in cfg.class_weight.items():
            if k >= num_classes:
                raise TrainError(f"class weight for class {k}, but the dataset has {num_classes} classes")
            weights[k] = w
        sample_weight = weights[y_tr]
    return _Arrays(
        x_tr,
        y_tr,
        _one_hot(y_tr, num_classes),
        sample_weight,
        x_fit_val,
        _one_hot(y_fit_val, num_classes),
        num_classes,
        prepare_seconds,
    )


@dataclass
class _Progress:
    """Where a run stands: epochs done, their history and time, the best epoch so far."""

    start_epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    best_val: float = -1.0
    best_epoch: int = 0
    stopped_before: bool = False  # a resumed run that early stopping had already ended
    # A fine-tuning run's card of the model it started from: read when it starts, and when resumed as its
    # checkpoint recorded it (the file --init named may have changed since: "default" after an upgrade)
    init: dict[str, Any] | None = None


def _start_or_resume(
    cfg: TrainConfig, run_dir: Path, ds: Dataset, arrays: _Arrays, precision: str, resume: bool, log: Any
) -> tuple[Any, _Progress]:
    """The compiled model to train: from the run's checkpoint when resuming one, else a new one."""
    import keras

    checkpoint, best_path = run_dir / "checkpoint.keras", run_dir / "model.keras"
    progress = _Progress()
    if resume and checkpoint.is_file():
        model, meta = load_model(checkpoint, compile=True)
        trained_on = meta.get("data", {}).get("sha256")
        if trained_on is not None and trained_on != ds.sha256:
            raise TrainError(
                f"{run_dir}: the run was trained on {cfg.dataset} with sha256 {trained_on}, but that dataset now "
                f"has sha256 {ds.sha256}; start a new run instead"
            )
        state = meta["state"]
        progress.start_epoch, progress.history = state["epoch"], state["history"]
        progress.train_seconds = state["train_seconds"]
        progress.init = meta.get("init")
        if best_path.is_file():  # model.keras is the source of truth for the best model so far
            best_meta = read_metadata(best_path)
            progress.best_val, progress.best_epoch = best_meta["val_accuracy"], best_meta["epoch"]
        _compile(model, model.optimizer, cfg)
        keras.utils.set_random_seed(cfg.seed + progress.start_epoch)
        log(f"Resuming {run_dir} after epoch {progress.start_epoch} of {cfg.epochs}")
        if cfg.patience is not None and cfg.first_selectable() <= progress.start_epoch < cfg.epochs:
            progress.stopped_before = progress.start_epoch - progress.best_epoch >= cfg.patience
        return model, progress
    if resume:
        log(f"{run_dir}: no checkpoint yet, starting from epoch 1")
    model, progress.init = _initial_model(cfg, arrays.num_classes, precision, log)
    _compile(model, _optimizer(cfg, _steps(len(arrays.x), cfg.batch_size)), cfg)
    return model, progress


def _bookkeeping(cfg: TrainConfig, run_dir: Path, metadata: dict, progress: _Progress, log: Any) -> Any:
    """The Keras callback that keeps the books after every epoch: history, the best model so far, the
    checkpoint (both written atomically), early stopping. Its own time is left out of the training time."""
    import keras

    class Bookkeeping(keras.callbacks.Callback):
        seconds = 0.0  # spent here, saving
        stopped_early = False
        fit_start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            t = time.perf_counter()
            for k, v in (logs or {}).items():
                progress.history.setdefault(k, []).append(float(v))
            val_acc = progress.history["val_accuracy"][-1]
            done = epoch + 1
            selectable = done >= cfg.first_selectable()
            if selectable and val_acc > progress.best_val:
                progress.best_val, progress.best_epoch = val_acc, done
                save_model(self.model, run_dir / "model.keras", {**metadata, "epoch": done, "val_accuracy": val_acc})
            seconds = progress.train_seconds + t - self.fit_start - self.seconds
            state = {"epoch": done, "history": progress.history, "train_seconds": seconds}
            save_model(
                self.model,
                run_dir / "checkpoint.keras",
                {**metadata, "epoch": done, "val_accuracy": val_acc, "state": state},
            )
            _atomic_json(run_dir / "history.json", progress.history)
            if (
                selectable
                and cfg.patience is not None
                and done - progress.best_epoch >= cfg.patience
                and done < cfg.epochs
            ):
                log(f"Early stop: no better validation accuracy for {cfg.patience} epochs")
                self.stopped_early = True
                self.model.stop_training = True
            self.seconds += time.perf_counter() - t

    return Bookkeeping()


def _metadata(
    cfg: TrainConfig, ds: Dataset, architecture: str, device: str, precision: str, init: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a saved model says about itself (see models.py), before its metrics are known; ``init``:
    the card of the model it was fine-tuned from (`_init_card`)."""
    import keras

    num_digits = len(ds.class_names)
    return {
        "architecture": architecture,
        "class_names": list(ds.class_names),
        "reject_class": num_digits if cfg.negatives else None,
        "input": {"shape": [28, 28], "dtype": "float32", "range": [0, 255], "polarity": "white ink on black"},
        "preprocessing_version": PREPROCESSING_VERSION,  # of the path its rendered and labelled images took
        "rule_reader": RuleSettings().to_json(),  # `read --reader rules`: tuned for digitnet's recipes
        "normalization": "inside the model (layer 'normalize'): feed raw pixel values 0-255",
        "config": cfg.to_json(),
        "data": {
            "dataset": ds.name,
            "sha256": ds.sha256,
            "source": ds.source,
            "validation": cfg.validation,
            "extra": [_data_card(path, "training") for path in cfg.extra_data]
            + [_data_card(path, "validation") for path in cfg.validation_data],
        },
        **({"init": init} if init else {}),
        "training": {
            "device": device,
            "precision": precision,
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
            "machine": machine_description(),
        },
    }


def _init_card(init: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What a fine-tuned model's card says of the model it started from (``init`` as --init named it,
    ``meta`` its metadata): its digest, and that model's own configuration, data and lineage, so that
    every set a fine-tuned model learnt from is listed."""
    keys = ("architecture", "content_sha256", "epoch", "preprocessing_version", "config", "data", "training", "init")
    return {"path": "the shipped model" if init == "default" else str(init), **{k: meta[k] for k in keys if k in meta}}


def _data_card(path: str, role: str) -> dict[str, Any]:
    """What a model card says of a labelled folder it was trained or validated on: its digest, size, and
    the source and licence lines of the folder's README, as stated there."""
    from ..data import load_labelled

    labelled = load_labelled(path)
    card: dict[str, Any] = {"path": path, "role": role, "images": len(labelled.y), "sha256": labelled.sha256}
    if labelled.writers:
        card["writers"] = len(set(labelled.writers))
    readme = next((p for p in sorted(Path(path).glob("README*")) if p.is_file()), None)
    if readme is not None:
        for line in readme.read_text(errors="replace").splitlines()[:100]:
            text = line.strip().lstrip("-* ").strip()
            for key, prefixes in (("source", ("source",)), ("licence", ("licence", "license"))):
                if key not in card and text.lower().startswith(prefixes):
                    card[key] = text.split(":", 1)[-1].strip()
    return card


def _finish(
    model: Any, meta: dict[str, Any], cfg: TrainConfig, ds: Dataset, run_dir: Path, log: Any, out: Path | None = None
) -> dict:
    """Measure the final model on validation and test (digits only), fit its temperature and choose its
    rejection threshold on validation data, and save it as ``out`` (default ``run_dir/model.keras``)
    with its metrics (``run_dir/metrics.json``). Returns the metrics."""
    from ..evaluate import classification_metrics
    from ..reading.recognizer import calibrated, digit_probabilities, predict_probabilities

    model = to_float32(model)  # what is measured is what is saved and exported
    num_digits = len(ds.class_names)
    _, (x_val, y_val) = split_validation(ds.x_train, ds.y_train, cfg.validation)

    p_val = predict_probabilities(model, x_val)
    p_test = predict_probabilities(model, ds.x_test)
    # Temperature scaling on validation data: the clean digits, and with a "not a digit" class also
    # digits rendered as real images and non-digits, each with its label.
    fit_p, fit_y = [p_val], [y_val]
    if cfg.negatives:
        rejection = _rejection_data(cfg, x_val, y_val, log)
        p_domain = predict_probabilities(model, rejection["val_domain"])
        p_neg = predict_probabilities(model, rejection["val_negatives"])
        fit_p += [p_domain, p_neg]
        fit_y += [rejection["val_domain_labels"], np.full(len(p_neg), num_digits)]
    temperature = fit_temperature(np.concatenate(fit_p), np.concatenate(fit_y).astype(np.int64))
    log(f"Temperature {temperature:.3f}, fitted on validation data")
    meta["temperature"] = temperature
    p_val, p_test = calibrated(p_val, temperature), calibrated(p_test, temperature)
    metrics = {
        "validation": classification_metrics(y_val, digit_probabilities(p_val, num_digits), ds.class_names),
        "test": classification_metrics(ds.y_test, digit_probabilities(p_test, num_digits), ds.class_names),
    }
    if cfg.negatives:
        p_domain = calibrated(p_domain, temperature)
        meta["reject"] = _reject_threshold(
            p_domain[:, num_digits],
            p_domain[:, :num_digits].argmax(axis=1) == rejection["val_domain_labels"],
            calibrated(p_neg, temperature)[:, num_digits],
            p_val[:, num_digits],
            log,
        )
    meta.pop("format", None)
    meta.pop("format_version", None)
    meta.update(
        metrics={
            split: {k: m[k] for k in ("accuracy", "macro_avg", "weighted_avg", "per_class")}
            for split, m in metrics.items()
        },
        parameters=model.count_params(),
    )
    save_model(model, out or run_dir / "model.keras", meta)
    _atomic_json(run_dir / "metrics.json", metrics)
    return metrics


def calibrate(model: str | os.PathLike, out: str | os.PathLike | None = None, log: Any = print) -> dict[str, Any]:
    """Fit a trained model's temperature and choose its rejection threshold again, on the validation data
    it was trained with, and save it to ``out`` (default: in place); its ONNX twin, if any, is made
    again. For models saved before temperature scaling existed, or after preprocessing has changed.
    Returns the new metadata."""
    from ..export import export_model

    path = resolve_model_path(model)
    keras_model, meta = load_model(path)
    cfg = TrainConfig.from_json(meta["config"])
    ds = load_dataset(meta["data"]["dataset"], cfg.data_dir)
    if ds.sha256 != meta["data"]["sha256"]:
        raise TrainError(
            f"{path}: trained on {meta['data']['dataset']} with sha256 {meta['data']['sha256']}, "
            f"but that dataset now has sha256 {ds.sha256}"
        )
    target = Path(out) if out else path
    had_twin = path.with_suffix(".onnx").is_file()
    with tempfile.TemporaryDirectory() as tmp:
        # Calibrated in place, a run directory's metrics.json follows its model (the test metrics change
        # with the temperature only in their confidences, but the file must describe the model beside
        # it). Written elsewhere (--out), the run's own files stay as they are.
        in_place = target.resolve() == path.resolve() and (path.parent / "metrics.json").is_file()
        run_dir = path.parent if in_place else Path(tmp)
        _finish(keras_model, meta, cfg, ds, run_dir, log, out=target)
    if had_twin or target.with_suffix(".onnx").is_file():
        export_model(target, "onnx", target.with_suffix(".onnx"))
    return read_metadata(target)


def _train_ensemble(
    cfg: TrainConfig, run_dir: Path, ds: Dataset, verbose: int | str, log: Any, callbacks: list[Any] | None
) -> TrainResult:
    """Train ``cfg.ensemble`` members in ``run_dir/member-K`` (seeds seed+K), then save one model whose
    output is the mean of the members' probabilities. Finished members are kept: running it again
    (``--resume``) continues with the first unfinished one."""
    import keras

    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_json(run_dir / "config.json", cfg.to_json())
    member_dirs = [run_dir / f"member-{k}" for k in range(cfg.ensemble)]
    for k, member_dir in enumerate(member_dirs):
        log(f"Ensemble member {k + 1} of {cfg.ensemble} (seed {cfg.seed + k}) in {member_dir}")
        if (member_dir / "metrics.json").is_file():
            log("  already trained")
        elif (member_dir / "config.json").is_file():
            train(out=member_dir, resume=True, verbose=verbose, data=ds, callbacks=callbacks)
        else:
            member = dataclasses.replace(cfg, ensemble=1, seed=cfg.seed + k)
            train(member, out=member_dir, verbose=verbose, data=ds, callbacks=callbacks)

    members, member_meta = [], []
    for k, member_dir in enumerate(member_dirs):
        m, meta = load_model(member_dir / "model.keras")
        m.name = f"member_{k}"  # layer names must be unique within the ensemble
        members.append(m)
        member_meta.append(meta)
    inputs = keras.Input(shape=(28, 28), name="pixels")
    average = keras.layers.Average(name="probabilities")([m(inputs) for m in members])
    model = keras.Model(inputs, average, name=f"ensemble_{cfg.ensemble}_{cfg.model}")

    first = member_meta[0]["training"]
    meta = _metadata(
        cfg,
        ds,
        f"ensemble of {cfg.ensemble} {cfg.model}",
        first["device"],
        first["precision"],
        member_meta[0].get("init"),
    )
    train_seconds = sum(m.get("train_seconds", 0.0) for m in member_meta)
    meta.update(
        train_seconds=train_seconds,
        prepare_seconds=sum(m.get("prepare_seconds", 0.0) for m in member_meta),
        members=[
            {"seed": cfg.seed + k, "path": str(d), "test_accuracy": m["metrics"]["test"]["accuracy"]}
            for k, (d, m) in enumerate(zip(member_dirs, member_meta, strict=True))
        ],
        history=member_meta[0].get("history", {}),
    )
    metrics = _finish(model, meta, cfg, ds, run_dir, log)
    log(
        "Members' test accuracy: "
        + ", ".join(f"{m['test_accuracy']:.4f}" for m in meta["members"])
        + f"; ensemble: validation {metrics['validation']['accuracy']:.4f}, test {metrics['test']['accuracy']:.4f}"
    )
    return TrainResult(
        run_dir=run_dir,
        model_path=run_dir / "model.keras",
        config=cfg,
        history=meta["history"],
        metrics=metrics,
        train_seconds=train_seconds,
        device=first["device"],
        best_epoch=0,
        extra={"precision": first["precision"], "members": meta["members"]},
    )


__all__ += ["ModelError", "augment_images", "configure_device", "pick_precision"]
