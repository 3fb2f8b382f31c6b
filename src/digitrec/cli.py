"""The `digitrec` command: one subcommand per library call, flags mapping to keyword arguments."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .reading.files import iter_images, shown_path


class CommandError(Exception):
    """A command cannot do what was asked; the message says why."""


# Which extra brings each top-level module that the core install (`pip install digitrec`) lacks.
EXTRAS = {
    **dict.fromkeys(("keras", "tensorflow", "tensorboard", "matplotlib", "onnx", "tf2onnx"), "train"),
    **dict.fromkeys(("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "multipart", "gradio"), "serve"),
    **dict.fromkeys(("python_multipart", "pydantic", "anyio"), "serve"),
    **dict.fromkeys(("ray", "pyarrow"), "distributed"),
}


def _extra_for(module: str) -> str | None:
    """The extra to install for a missing module (dotted names by their top level), or None."""
    return EXTRAS.get(module.split(".")[0])


# Commands that always run Keras (predict, read and serve load it only for a model without an ONNX twin).
KERAS_COMMANDS = frozenset({"models", "train", "train-reader", "evaluate", "export", "calibrate"})


def _quiet_backends() -> None:
    # TensorFlow's C++ INFO lines (oneDNN notices, CPU feature guard) drown the output people need.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .reading.images import quiet_decoder_warnings

    quiet_decoder_warnings()


def _class_weights(values: Sequence[str] | None) -> dict[int, float] | None:
    if not values:
        return None
    weights: dict[int, float] = {}
    for item in ",".join(values).split(","):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[int(key)] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"class weight {item!r}: write CLASS=WEIGHT, e.g. 9=2") from None
    return weights


def _print_json(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


# --- subcommands -----------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from .models import DEFAULT_MODEL, MODELS

    rows = []
    for spec in MODELS.values():
        recipe = ", ".join(f"{k}={v}" for k, v in spec.recipe.items())
        rows.append(
            {
                "name": spec.name,
                "default": spec.name == DEFAULT_MODEL,
                "description": spec.description,
                "recipe": spec.recipe,
            }
        )
        if not args.json:
            mark = " (default)" if spec.name == DEFAULT_MODEL else ""
            print(f"{spec.name}{mark}\n    {spec.description}\n    recipe: {recipe}")
    if args.json:
        _print_json(rows)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import load_dataset

    ds = load_dataset(args.dataset, args.data_dir, verbose=not args.json)
    info = {
        "dataset": ds.name,
        "source": ds.source,
        "train": list(ds.x_train.shape),
        "test": list(ds.x_test.shape),
        "classes": list(ds.class_names),
        "sha256": ds.sha256,
        "verified": ds.name == "mnist",
    }
    if ds.whole:
        info["images"] = len(ds.x_test)
    if args.json:
        _print_json(info)
    elif ds.whole:
        print(f"{ds.name}: {len(ds.x_test)} labelled images, one set (no split), {len(ds.class_names)} classes")
    else:
        print(f"{ds.name}: {len(ds.x_train)} training and {len(ds.x_test)} test images, {len(ds.class_names)} classes")
        print(f"source: {ds.source}")
        if ds.name == "mnist":
            print("verified: sha256 of all four arrays match the canonical MNIST")
        print(f"data sha256: {ds.sha256}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training.train import PRESETS, TrainConfig, train

    verbose: int | str = 0 if args.json and not sys.stdout.isatty() else "auto"
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if args.resume:
        given = {
            k for k, v in vars(args).items() if k in fields | {"preset", "out", "overwrite"} and v not in (None, False)
        }
        if given:
            options = ", ".join("--" + k.replace("_", "-") for k in sorted(given))
            raise CommandError(f"--resume continues a run with its own settings; do not pass {options}")
        result = train(out=args.resume, resume=True, verbose=verbose)
    else:
        values = dict(PRESETS[args.preset]) if args.preset else {}
        values.update({k: v for k, v in vars(args).items() if k in fields and v is not None})
        values["class_weight"] = _class_weights(args.class_weight)
        for name in ("extra_data", "validation_data"):
            if name in values:
                values[name] = tuple(values[name])
        result = train(TrainConfig(**values), out=args.out, overwrite=args.overwrite, verbose=verbose)
    if args.json:
        _print_json(result.summary())
    else:
        print(f"\nRun directory: {result.run_dir}")
        print(f"Next: digitrec evaluate --model {result.run_dir}")
        print(f"      digitrec predict --model {result.run_dir} IMAGE.png")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_metrics
    from .reading.recognizer import default_model_path

    if args.report:
        from .report import build_report

        report = build_report(args.model, args.report, args.dataset, args.data_dir, args.split, args.tta)
        metrics = json.loads((report.parent / "metrics.json").read_text())
        if args.json:
            _print_json(metrics)
        else:
            print(format_metrics(metrics, f"{metrics['model']} on {metrics['dataset']} {args.split}"))
            print(f"\nReport: {report}  (figures and metrics.json beside it)")
        return 0
    metrics = evaluate(args.model, args.dataset, args.data_dir, args.split, args.tta)
    out = Path(args.out) if args.out else None
    if out is None and args.model is not None:
        model_dir = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent
        shipped = default_model_path()
        # The shipped model's folder is the installed package: metrics are no part of it.
        if shipped is None or model_dir.resolve() != shipped.parent.resolve():
            out = model_dir / f"evaluation-{args.split}.json"
    if out is not None:
        from .data import atomic_write

        atomic_write(out, json.dumps(metrics, indent=2).encode())  # renamed into place: never half a file
    if args.json:
        _print_json(metrics)
    else:
        print(format_metrics(metrics, f"{metrics['model']} on {metrics['dataset']} {args.split}"))
        if out is not None:
            print(f"\nWritten: {out}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .data import load_dataset, split_validation
    from .report import plot_samples

    ds = load_dataset(args.dataset, args.data_dir)
    if args.split == "test" or ds.whole:  # a labelled folder is one set: all of it, whichever split
        x, y = ds.x_test, ds.y_test
    else:
        train, val = split_validation(ds.x_train, ds.y_train, args.validation)
        x, y = {"train": train, "validation": val}[args.split]
    path = plot_samples(x, y, ds.class_names, args.out, n=args.n, title=f"{ds.name} {args.split}", seed=args.seed)
    print(f"Written: {path}")
    return 0


def _answer_files(args: argparse.Namespace, answer: Any, show: Any) -> int:
    """Answer each image file; a file that fails gets an error row and the others are still answered."""
    from .reading.images import ImageError

    failed = False
    paths = list(iter_images(args.paths))
    if not paths:
        raise CommandError(f"no image files in {', '.join(args.paths)}")
    for path, problem in paths:
        name = shown_path(path)
        try:
            if problem is not None:
                raise ImageError(f"{name}: {problem}")
            row: dict[str, Any] = {"file": name, **answer(path).to_dict()}
        except ImageError as e:
            failed = True
            row = {"file": name, "error": shown_path(str(e))}  # the message may quote the name
        except Exception as e:  # a bug of ours must not cost the answers for the other files
            failed = True
            row = {"file": name, "error": f"internal error ({type(e).__name__}: {e}); please report it"}
        if args.json:
            _print_json(row)
        elif "error" in row:
            print(f"{row['file']}: error: {row['error']}")
        else:
            print(f"{row['file']}: {show(row)}")
    return 1 if failed else 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .reading.recognizer import load_recognizer

    rec = load_recognizer(args.model, tta=args.tta)

    def show(row: dict[str, Any]) -> str:
        if row["digit"] is None:
            return f"no digit ({row['reason']}, {row['confidence']:.3f})"
        return f"{row['digit']}  ({row['confidence']:.3f})"

    return _answer_files(args, rec.predict, show)


def cmd_read(args: argparse.Namespace) -> int:
    from .reading.recognizer import load_recognizer

    rec = load_recognizer(args.model, reader=args.reader)

    def show(row: dict[str, Any]) -> str:
        confidences = " ".join(f"{d['confidence']:.2f}" for d in row["digits"])
        text = row["text"].replace("\n", " / ")  # lines one above the other, top to bottom
        return f"{text or '(no digits)'}  [{confidences}]"

    return _answer_files(args, rec.read, show)


def cmd_train_reader(args: argparse.Namespace) -> int:
    from .training.line_training import LineConfig, train_line_reader

    fields = {f.name for f in dataclasses.fields(LineConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    for name in ("extra_data", "validation_data"):
        if name in values:
            values[name] = tuple(values[name])
    try:
        cfg = LineConfig(**values)
        summary = train_line_reader(cfg, log=(lambda *a: print(*a, file=sys.stderr)) if args.json else print)
    except ValueError as e:  # the settings' problems, each named
        raise CommandError(str(e)) from None
    if args.json:
        _print_json(summary)
    else:
        print(f"\nNext: digitrec read --reader {Path(cfg.out) / 'lines.onnx'} IMAGE.png")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .serving.batch import BatchError, batch

    try:
        done = batch(
            args.paths,
            args.out,
            task=args.task,
            address=args.address,
            model=args.model,
            fmt=args.format,
            actors=args.actors,
            log=lambda *a: print(*a, file=sys.stderr),
        )
    except BatchError as e:
        raise CommandError(str(e)) from None
    print(f"{args.out}: {done['rows']} rows, {done['errors']} with an error", file=sys.stderr)
    return 1 if done["errors"] else 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from PIL import Image

    from .reading.images import to_mnist

    field = to_mnist(args.image)
    out = Path(args.out)
    image = Image.fromarray(field, "L")
    if args.scale > 1:
        image = image.resize((28 * args.scale, 28 * args.scale), Image.Resampling.NEAREST)
    image.save(out)
    print(f"Written: {out} (28x28{f', shown {args.scale}x' if args.scale > 1 else ''}), what the model sees")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model

    path, diff = export_model(args.model, args.format, args.out)
    print(f"Written: {path} ({args.format}); verified: max abs difference from Keras {diff:.1e} on sample digits")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .training.train import calibrate

    meta = calibrate(args.model, args.out, log=lambda m: print(m, file=sys.stderr))
    summary = {"model": str(args.out or args.model), "temperature": meta["temperature"], **meta.get("reject", {})}
    print(json.dumps(summary))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.server import ServerConfig, serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"digitrec serve: listening on {args.host}: reachable from other machines", file=sys.stderr)
    config = ServerConfig(
        max_upload_bytes=args.max_upload,
        max_concurrency=args.max_concurrency,
        body_timeout=args.body_timeout,
        ui=not args.no_ui,
        threads=args.threads,
        cors_origins=tuple(args.cors_origin),
        max_head_bytes=args.max_head_bytes,
        max_headers=args.max_headers,
        head_timeout=args.head_timeout,
        keep_alive=args.keep_alive,
        max_connections=args.max_connections,
    )
    if args.workers < 0:
        raise CommandError(f"--workers must be 0 (one per core) or more, got {args.workers}")
    os.environ["DIGITREC_READER"] = args.reader  # the workers load their recognizers with it
    _use_tta(args)
    try:
        serve(args.host, args.port, args.model, config, workers=args.workers)
    except OSError as e:  # binding the workers' sockets (one worker: uvicorn reports it and exits)
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    except RuntimeError as e:  # a worker process could not start
        raise CommandError(str(e)) from None
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .models import read_metadata
    from .reading.recognizer import default_model_path

    path = args.model or default_model_path()
    if path is None:
        raise CommandError("this build ships no default model; pass --model RUN_DIR")
    meta = read_metadata(path)
    if args.json:
        _print_json(meta)
        return 0
    from .report import model_card

    print(f"model file: {path}")
    for key, value in model_card(meta, meta.get("parameters")).items():
        if value is not None:
            print(f"{key}: {value}")
    test = meta.get("metrics", {}).get("test", {})
    if test:
        print(f"test accuracy: {test['accuracy']:.4f}, macro F1 {test['macro_avg']['f1']:.4f}")
        print("per-class F1: " + "  ".join(f"{r['class']}:{r['f1']:.3f}" for r in test["per_class"]))
    _print_line_reader(Path(path))
    return 0


def _print_line_reader(model: Path) -> None:
    """The card of the line reader `read` uses with ``model`` (see `recognizer.load_recognizer`)."""
    from .reading.lines import default_line_model_path, load_line_reader

    folder = model if model.is_dir() else model.parent
    own = [p for p in (folder / "lines.onnx", folder / "lines.keras") if p.is_file()]
    path = own[0] if own else default_line_model_path()
    if path is None:
        print("line reader: none (read uses the rule-based reader)")
        return
    meta = load_line_reader(path).metadata
    print(f"line reader: {path}")
    print(f"  threshold: a line whose least sure digit is under {meta.get('min_confidence')} reads nothing")
    for name, value in (meta.get("validation") or {}).items():
        print(f"  validation, {name}: {value:.1%} " + ("read as no number" if name == "non-digits" else "exact"))
    for card in meta.get("training_data") or []:
        extra = ", ".join(f"{k} {card[k]}" for k in ("images", "writers", "source", "licence") if k in card)
        print(f"  {card.get('role', 'training')}: {card.get('path')}" + (f" ({extra})" if extra else ""))


# --- parser ----------------------------------------------------------------------------------------


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _degrees(text: str) -> float:
    """An argparse type: degrees of test-time augmentation, 0 to 45."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 45:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 45")
    return value


def _tta_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tta",
        type=_degrees,
        metavar="DEGREES",
        help="test-time augmentation: each digit's answer averaged over the image and two copies turned this "
        "many degrees either way; 0 reads each digit once, a third of the model's work (default: "
        "$DIGITREC_TTA, else the model's own, 8 for the shipped one; `read` reads each digit once)",
    )


def _use_tta(args: argparse.Namespace) -> None:
    """Pass --tta on to the recognizers the server's worker processes load."""
    if args.tta is not None:
        os.environ["DIGITREC_TTA"] = f"{args.tta:g}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec",
        description="Handwritten digit recognition: verified MNIST, Keras models, training, evaluation, prediction.",
    )
    parser.add_argument("--version", action="version", version=f"digitrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_models,
        _add_data,
        _add_train,
        _add_evaluate,
        _add_show,
        _add_predict,
        _add_read,
        _add_batch,
        _add_train_reader,
        _add_preprocess,
        _add_export,
        _add_calibrate,
        _add_serve,
        _add_info,
    ):
        add(sub)  # the commands in the order --help lists them
    return parser


def _data_args(p: argparse.ArgumentParser, dataset_default: str | None = "mnist") -> None:
    p.add_argument(
        "--dataset",
        default=dataset_default,
        help="mnist, fashion-mnist, a folder of labelled images (labels.csv: file,label), or a directory of "
        "IDX files" + (f" (default: {dataset_default})" if dataset_default else " (default: the model's own)"),
    )
    p.add_argument(
        "--data-dir", help="directory with your own copy (mnist.npz or the 4 IDX files); also $DIGITREC_DATA"
    )


def _image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or directories searched recursively")
    p.add_argument("--model", help="model file or run directory (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")


def _add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="list the registered model architectures")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)


def _add_data(sub: Any) -> None:
    p = sub.add_parser("data", help="load and verify a dataset, and say where it came from")
    _data_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data)


def _add_train(sub: Any) -> None:
    from .data import DEFAULT_VALIDATION
    from .models import DEFAULT_MODEL, MODELS
    from .training.train import OPTIMIZERS, PRECISIONS, PRESETS, SCHEDULES

    p = sub.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Train a model. Unset options come from the preset, then the model's tutorial recipe "
        "(see `digitrec models`). The best epoch on the validation split is kept; the test set only reports.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named configuration; other flags override it")
    p.add_argument("--model", choices=list(MODELS), help=f"architecture (default: {DEFAULT_MODEL})")
    p.add_argument("--epochs", type=int, help="passes over the training split")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--learning-rate", "--lr", type=float, help="peak learning rate")
    p.add_argument("--beta1", dest="beta_1", type=float, help="Adam's beta_1 (default 0.9)")
    p.add_argument("--beta2", dest="beta_2", type=float, help="Adam's beta_2 (default 0.999)")
    p.add_argument(
        "--weight-decay",
        type=float,
        help="decoupled weight decay: each step shrinks the weights by learning rate x this (default: 5e-4 "
        "with adamw, none otherwise)",
    )
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, help="random affine augmentation (rotation, shift, zoom)"
    )
    p.add_argument("--rotation", type=float, help="augmentation: largest rotation in degrees (default 10)")
    p.add_argument("--shift", type=float, help="augmentation: largest shift, fraction of the side (default 0.1)")
    p.add_argument("--zoom", type=float, help="augmentation: largest relative zoom (default 0.1)")
    p.add_argument(
        "--elastic", type=float, help="augmentation: smooth random distortion, typical shift in pixels (default 0)"
    )
    p.add_argument("--shear", type=float, help="augmentation: largest slant in degrees (default 0)")
    p.add_argument(
        "--stroke", type=float, help="augmentation: largest thickening or thinning, fraction of a pixel (default 0)"
    )
    p.add_argument(
        "--class-weight", action="append", metavar="CLASS=W", help="loss weight for a class, e.g. 9=2 (repeatable)"
    )
    p.add_argument("--label-smoothing", type=float, help="label smoothing (default 0)")
    p.add_argument(
        "--ema", type=float, help="moving average of the weights, decay per step, e.g. 0.999 (default 0: none)"
    )
    p.add_argument("--validation", type=int, help=f"hold out the last N training images (default {DEFAULT_VALIDATION})")
    p.add_argument("--patience", type=int, help="early stopping: epochs without improvement on validation")
    p.add_argument(
        "--select-from",
        type=float,
        metavar="SHARE",
        help="keep the best epoch from this share of the epochs on, e.g. 0.5: the second half (default 0: any)",
    )
    p.add_argument("--precision", choices=PRECISIONS, help="float32, bf16, or auto: the faster here (default)")
    p.add_argument("--limit", type=int, help="use only the first N training images (quick experiments)")
    p.add_argument("--domain", type=int, help="add N training digits rendered as photos/canvases (real images)")
    p.add_argument("--negatives", type=int, help="add N non-digits as a 'not a digit' class (0: none)")
    p.add_argument("--styles", type=int, help="add N training 0s, 1s and 7s given a slash, a long flag or a crossbar")
    p.add_argument("--pairs", type=int, help="with --negatives: add N pairs of touching digits to that class")
    p.add_argument(
        "--ensemble",
        type=int,
        help="train N members (seeds SEED, SEED+1, ...) and save one model averaging their probabilities",
    )
    p.add_argument(
        "--extra-data",
        action="append",
        metavar="DIR",
        help="a folder of labelled images (labels.csv: file,label[,writer]) added to the training split (repeatable)",
    )
    p.add_argument("--extra-repeat", type=int, help="copies of each extra image per epoch, augmented anew (default 3)")
    p.add_argument(
        "--extra-domain",
        type=float,
        help="renders per image of each extra set as photos, canvases and bitmaps, e.g. 0.5 (half of them once) "
        "or 2 (each twice); at most 4 (default 0)",
    )
    p.add_argument(
        "--conditions",
        type=float,
        metavar="SHARE",
        help="share of the rendered photos taken instead under a harder condition: a whole page, pencil, a "
        "desk, a shadow, a vignette, a form cell, ruled paper, a neighbour's pieces, a tight crop (default 0)",
    )
    p.add_argument(
        "--validation-data",
        action="append",
        metavar="DIR",
        help="a labelled folder that joins validation: the best epoch and the 'not a digit' threshold are "
        "chosen on it too; never trained on (repeatable)",
    )
    p.add_argument(
        "--init",
        nargs="?",
        const="default",
        metavar="MODEL",
        help="fine-tune: start from this model's weights (default: the shipped model); see --preset finetune",
    )
    p.add_argument(
        "--distribute",
        action="store_true",
        default=None,
        help="data-parallel over every device the backend sees (keras.distribution; KERAS_BACKEND=jax). "
        "On CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices",
    )
    p.add_argument("--dataset", help="mnist (default), fashion-mnist, a labelled folder, or a directory of IDX files")
    p.add_argument("--data-dir", help="directory with your own copy of the dataset; also $DIGITREC_DATA")
    p.add_argument("--out", help="run directory (default: runs/MODEL-TIMESTAMP)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR from its last finished epoch")
    p.add_argument(
        "--json", action="store_true", help="print a final JSON summary line (train_seconds, test_accuracy, ...)"
    )
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="accuracy, per-class precision/recall/F1, confusion matrix, mistakes; --report for HTML"
    )
    p.add_argument("--model", help="model file or run directory (default: the shipped model)")
    _data_args(p, dataset_default=None)
    p.add_argument("--split", choices=("test", "validation"), default="test", help="which split (default: test)")
    p.add_argument(
        "--out",
        help="write the metrics JSON here (default: evaluation-SPLIT.json beside the model; none for the shipped one)",
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write DIR/report.html (self-contained) with figures and metrics.json: samples, training curves, "
        "confusion matrix, per-class table, confident mistakes, calibration, model card",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _tta_arg(p)
    p.set_defaults(func=cmd_evaluate)


def _add_show(sub: Any) -> None:
    from .data import DEFAULT_VALIDATION

    p = sub.add_parser("show", help="save a grid of sample digits with their labels, from any dataset and split")
    _data_args(p)
    p.add_argument("--split", choices=("train", "validation", "test"), default="test", help="(default: test)")
    p.add_argument("--validation", type=int, default=DEFAULT_VALIDATION, help="size of the validation split")
    p.add_argument("-n", type=int, default=40, help="how many digits (default 40)")
    p.add_argument("--seed", type=int, default=0, help="which random digits (default 0)")
    p.add_argument("--out", default="samples.png", help="PNG file to write (default samples.png)")
    p.set_defaults(func=cmd_show)


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="the digit in each image (null when there is none)",
        description="Predict the digit in each image: photos, scans, canvas drawings. An image without a "
        "digit (blank, a letter, a picture of a shoe) gets digit null. Exit code 1 if any file failed.",
    )
    _image_args(p)
    _tta_arg(p)
    p.set_defaults(func=cmd_predict)


def _add_read(sub: Any) -> None:
    p = sub.add_parser(
        "read",
        help="read a line of handwritten digits (a zip code, an amount) in each image",
        description="Read the digits of each image left to right, with a box per digit. Lines one above "
        "the other are read apart, top to bottom (in --json's text, separated by a newline; in the "
        "table, by ' / '). The printed lines of a form field (a box per digit, a row of boxes, a comb, "
        "an underline) are not read. Exit code 1 if any file failed.",
    )
    _image_args(p)
    p.add_argument(
        "--reader",
        default=os.environ.get("DIGITREC_READER", "auto"),
        help="what reads the lines: 'auto' (a lines.onnx beside --model, else the shipped line reader), "
        "'rules' (cut into digits by rules, each read by the digit model), or a line model file "
        "(default: $DIGITREC_READER or auto)",
    )
    p.set_defaults(func=cmd_read)


def _add_batch(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="predict or read many images on a Ray cluster (a local one by default), to Parquet or JSON lines",
        description="Answer every image of PATH... (files, directories searched recursively, glob patterns, or "
        "Parquet/CSV tables with a 'path' or 'image' column) on a Ray cluster: actors hold the model, decode "
        "and preprocess; one row per input, with the fields of predict --json or read --json and an 'error' "
        "column. A bad file never stops the run. Needs the distributed extra: pip install 'digitrec[distributed]'.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="images, directories, globs or tables of inputs")
    p.add_argument("--out", required=True, help="file to write: .parquet (default format) or .jsonl")
    p.add_argument("--task", choices=("predict", "read"), default="predict", help="(default predict)")
    p.add_argument("--address", help="a Ray cluster to join (default $RAY_ADDRESS, else a local cluster)")
    p.add_argument("--model", help="model file or run directory (default: the shipped model)")
    p.add_argument("--format", choices=("parquet", "jsonl"), help="(default: from --out's suffix, else parquet)")
    p.add_argument("--actors", type=_bounded_int(1, 100_000), help="actors holding the model (default: one per CPU)")
    p.set_defaults(func=cmd_batch)


def _add_train_reader(sub: Any) -> None:
    p = sub.add_parser(
        "train-reader",
        help="train the line reader (read whole numbers) on synthetic lines of real digits",
        description="Train the learned line reader: lines of 1-12 real digits (MNIST's training split and "
        "labelled folders) with separators, currency signs and closing marks, some rendered as photos, "
        "canvases, forms and scans; a CNN with a CTC output. The epoch and the confidence threshold are "
        "chosen on validation numbers (MNIST validation digits and --validation-data). Writes lines.keras "
        "and lines.onnx (with its settings) in --out.",
    )
    p.add_argument("--out", default="runs/lines", help="run directory (default runs/lines)")
    p.add_argument("--lines", type=int, help="training lines (default 100000)")
    p.add_argument("--epochs", type=int, help="passes over them (default 7)")
    p.add_argument("--rendered", type=float, help="share rendered as real images and read back (default 0.2)")
    p.add_argument(
        "--refresh",
        type=float,
        help="share of the lines not rendered made anew for each epoch after the first, in a process of "
        "its own while the epoch before trains (default 0: every line made once)",
    )
    p.add_argument("--batch-size", type=int, help="lines per step (default 64)")
    p.add_argument("--learning-rate", type=float, help="peak learning rate (default 0.002)")
    p.add_argument("--seed", type=int, help="(default 0)")
    p.add_argument(
        "--precision",
        choices=("auto", "float32", "bf16", "mixed_bfloat16"),
        help="bf16 (or Keras' name, mixed_bfloat16): mixed bfloat16 (default auto: where the CPU has AMX)",
    )
    p.add_argument(
        "--extra-data",
        action="append",
        metavar="DIR",
        help="a labelled folder whose digits join MNIST's, three times as often (repeatable)",
    )
    p.add_argument(
        "--validation-data",
        action="append",
        metavar="DIR",
        help="a labelled folder whose digits make validation numbers too, never trained on (repeatable)",
    )
    p.add_argument("--validation-numbers", type=int, help="validation numbers per digit source (default 600)")
    p.add_argument("--workers", type=int, help="processes that make the lines (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    p.set_defaults(func=cmd_train_reader)


def _add_preprocess(sub: Any) -> None:
    p = sub.add_parser("preprocess", help="write the 28x28 image the model sees for an image")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--scale", type=int, default=1, help="enlarge the 28x28 result N times (nearest pixel)")
    p.set_defaults(func=cmd_preprocess)


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a model as ONNX (servers), LiteRT/TFLite (phones) or SavedModel (TF Serving), verified",
        description="Export a model and verify it: the export is loaded in its runtime and must agree with "
        "Keras on real digits. ONNX written beside a .keras file (model.onnx) is used by predict, read "
        "and serve (ONNX Runtime, no TensorFlow).",
    )
    p.add_argument("--format", choices=("onnx", "litert", "saved_model"), default="onnx", help="(default: onnx)")
    p.add_argument("--model", help="model file or run directory (default: the shipped model)")
    p.add_argument("--out", help="output path (default: beside the model: model.onnx, model.tflite, ...)")
    p.set_defaults(func=cmd_export)


def _add_calibrate(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a trained model's temperature and rejection threshold again, on its validation data",
        description="Temperature scaling and the 'not a digit' threshold, chosen on the validation data the "
        "model was trained with (training does this already). For models saved by an older digitrec, or "
        "after a change of preprocessing. Rewrites the model (and its ONNX twin) unless --out is given.",
    )
    p.add_argument("--model", required=True, help="model file or run directory")
    p.add_argument("--out", help="write the calibrated model here instead of in place")
    p.set_defaults(func=cmd_calibrate)


def _add_serve(sub: Any) -> None:
    from .reading.images import MAX_BYTES

    p = sub.add_parser(
        "serve",
        help="serve the REST API (/v1/predict, /v1/read) and the web UI (/), a worker process per core",
        description="Serve the REST API and the web UI. OpenAPI docs at /docs. Binds to 127.0.0.1 unless told "
        "otherwise; Ctrl-C or SIGTERM finishes the requests in flight, then stops.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="(default 8000)")
    p.add_argument("--model", help="model file or run directory (default: the shipped model)")
    p.add_argument(
        "--reader",
        default=os.environ.get("DIGITREC_READER", "auto"),
        help="what /v1/read and the Number tab read lines with: auto, rules or a line model file (see "
        "`digitrec read --help`; default: $DIGITREC_READER or auto)",
    )
    _tta_arg(p)
    p.add_argument(
        "--max-upload",
        type=_bounded_int(1, MAX_BYTES),
        default=MAX_BYTES,
        help=f"largest upload in bytes, at most the library's own file limit (default {MAX_BYTES})",
    )
    p.add_argument("--max-concurrency", type=int, default=64, help="requests in flight; more get 503 (default 64)")
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client may take to upload its request; slower uploads get 408 (default 30)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes, each with the model, taking the API's connections in turn; the web UI lives in "
        "the first (default 0: one per core, which serves the most: benchmarks/serve.py)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per worker that read the uploads (default 0: one per core; more only contend)",
    )
    p.add_argument(
        "--max-head-bytes",
        type=int,
        default=64 * 1024,
        help="largest request head (request line and headers) "
        "in bytes; larger gets 431 and the connection closed (default 65536)",
    )
    p.add_argument("--max-headers", type=int, default=100, help="most headers in a request; more get 431 (default 100)")
    p.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may take to send a request's head; slower gets 408 and is closed (default 10)",
    )
    p.add_argument(
        "--keep-alive", type=float, default=5.0, help="seconds an idle kept-alive connection stays open (default 5)"
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open connections per worker; more are answered 503 and closed at once (default 1000)",
    )
    p.add_argument("--no-ui", action="store_true", help="serve the API only")
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (e.g. https://forms.example.com) whose pages may call the server from a browser "
        "(repeatable; default: none, no CORS)",
    )
    p.set_defaults(func=cmd_serve)


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="the model card of a saved model: architecture, data, metrics, machine")
    p.add_argument("--model", help="model file or run directory (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    p.set_defaults(func=cmd_info)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `digitrec` and `python -m digitrec`."""
    from .data import DataError
    from .export import ExportError
    from .models import ModelError
    from .reading.images import ImageError
    from .training.train import TrainError

    _quiet_backends()
    args = build_parser().parse_args(argv)
    try:
        if args.command in KERAS_COMMANDS:
            from .models import import_keras

            import_keras()  # before anything else loads it, so that TensorFlow's start-up notices stay quiet
        return args.func(args)
    except (
        DataError,
        ModelError,
        TrainError,
        ImageError,
        ExportError,
        CommandError,
        ValueError,
        argparse.ArgumentTypeError,
    ) as e:
        print(f"digitrec {args.command}: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # a lean install: the job's extra is missing
        extra = _extra_for(e.name or "")
        if extra is None:
            raise
        print(
            f"digitrec {args.command}: error: this needs digitrec's '{extra}' extra (no module {e.name!r}): "
            f"pip install 'digitrec[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:  # the reader went away (`digitrec predict --json DIR | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped so
    except OSError as e:  # a missing folder, no permission, a full disk: the file and the reason, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"digitrec {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"digitrec {args.command}: interrupted", file=sys.stderr)
        return 130
