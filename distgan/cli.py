"""distgan's command line: ``train``, ``distill``, ``eval``, ``sample``, ``report``, ``demo``.

    distgan demo                                        # teacher -> student on Fashion-MNIST, < 5 min
    distgan train examples/teacher.toml --out runs/teacher
    distgan distill examples/distill.toml --set distill.T=4
    distgan eval runs/teacher/gan.safetensors --data fashion-mnist
    distgan sample runs/teacher/gan.safetensors --n 64
    distgan report runs/*

Every command writes a run folder (``--out``, default ``runs/<command>-<timestamp>``)
holding ``config.toml`` (the resolved configuration: pass it back to repeat the run),
its checkpoints, ``metrics.json`` and plots. ``train``, ``distill`` and ``demo`` read a
TOML configuration (see ``examples/*.toml``) whose every key has a default; ``--set
section.key=value`` overrides one key, ``--quick`` (or ``DISTGAN_QUICK=1``) shrinks
everything to a seconds-long smoke run. A misspelt or mistyped key is an error that
names it. Exit status: 0 done, 1 the run failed, 2 bad command line or configuration.
"""
from __future__ import annotations

import argparse
import datetime
import difflib
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "ConfigError", "load_config", "resolve_config", "dump_toml", "SCHEMAS"]

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration file, ``--set`` option or argument is invalid; the message says
    which key and why."""


# ---------------------------------------------------------------------------------------
# Configuration schemas: section -> key -> Field (or a nested dict of Fields).

class Field:
    """One configuration key: default, type, help, allowed values, lower bound.

    ``kind`` is one of ``int``, ``float``, ``bool``, ``str``, ``floats`` (a list of
    numbers). ``default=None`` means "unset" (the key is optional and left out of the
    written config).
    """

    def __init__(self, default, kind, help, choices=None, minimum=None, exclusive=False):
        self.default, self.kind, self.help = default, kind, help
        self.choices, self.minimum, self.exclusive = choices, minimum, exclusive

    def check(self, value, where):
        k = self.kind
        if k == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif k == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
                ok = math.isfinite(value)
        elif k == "bool":
            ok = isinstance(value, bool)
        elif k == "str":
            ok = isinstance(value, str)
        elif k == "floats":
            ok = isinstance(value, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            if ok:
                value = [float(v) for v in value]
        else:                                       # pragma: no cover - schema bug
            raise AssertionError(k)
        if not ok:
            names = {"int": "an integer", "float": "a finite number", "bool": "true or false",
                     "str": "a string", "floats": "a list of numbers"}
            raise ConfigError(f"{where}: expected {names[k]}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            raise ConfigError(f"{where}: {value!r} is not one of "
                              f"{', '.join(repr(c) for c in self.choices)}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if self.minimum is not None and k in ("int", "float"):
            if value < self.minimum or (self.exclusive and value == self.minimum):
                rel = ">" if self.exclusive else ">="
                raise ConfigError(f"{where}: must be {rel} {self.minimum}, got {value!r}")
        return value


_DATA = {
    "name": Field("fashion-mnist", "str", "data set: fashion-mnist, mnist, ring8, grid25, or a "
                  "path (.npz/.npy, a folder of IDX files, images or CIFAR-10 batches)"),
    "subset": Field(None, "int", "use only the first N samples", minimum=1),
    "n": Field(None, "int", "toy sets: number of samples drawn (default 100000)", minimum=1),
    "seed": Field(None, "int", "toy sets: seed of the samples (default 0)", minimum=0),
}


def _eval_section(classifier_default):
    return {
        "enabled": Field(True, "bool", "measure sample quality after the run"),
        "n": Field(2000, "int", "samples per side for FID/KID/precision/recall (or mode "
                   "statistics on toy sets)", minimum=10),
        "classifier": Field(classifier_default, "str",
                            "feature network: 'standard' (distgan's evaluation classifier, "
                            "trained once and cached), 'fast' (a fifth of an epoch, cached "
                            "separately), 'auto' (standard when cached, else fast), 'tiny' "
                            "(seconds, for smoke runs) or a classifier checkpoint path"),
        "profile": Field(True, "bool", "measure parameters, MACs, latency and memory"),
        "profile_repeats": Field(5, "int", "timed sampling calls per batch size", minimum=1),
        "seed": Field(0, "int", "seed of the evaluation samples", minimum=0),
    }


SCHEMAS = {
    "train": {
        "data": _DATA,
        "model": {
            "kind": Field("auto", "str", "dcgan (images), mlp (2-D points) or auto",
                          choices=("auto", "dcgan", "mlp")),
            "width": Field(1.0, "float", "scales every channel count of G (and D)", minimum=0,
                           exclusive=True),
            "d_width": Field(None, "float", "scales D's channels (default: width)", minimum=0,
                             exclusive=True),
            "latent_dim": Field(None, "int", "noise size (default 100 for dcgan, 2 for mlp)",
                                minimum=1),
            "conditional": Field(False, "bool", "class-conditional G and projection D"),
            "hidden": Field(256, "int", "mlp: hidden units at width 1", minimum=1),
            "depth": Field(3, "int", "mlp: hidden layers", minimum=1),
        },
        "train": {
            "steps": Field(None, "int", "iterations (wins over epochs)", minimum=0),
            "epochs": Field(5.0, "float", "passes over the data", minimum=0),
            "batch_size": Field(64, "int", "samples per batch", minimum=2),
            "seed": Field(0, "int", "seeds initialisation, noise and data order", minimum=0),
            "loss": Field("ns", "str", "non-saturating, hinge or least-squares",
                          choices=("ns", "hinge", "ls")),
            "lr": Field(2e-4, "float", "Adam learning rate of G (and D)", minimum=0,
                        exclusive=True),
            "lr_d": Field(None, "float", "Adam learning rate of D (default: lr)", minimum=0,
                          exclusive=True),
            "betas": Field([0.5, 0.999], "floats", "Adam betas"),
            "ema": Field(0.999, "float", "decay of G's moving average (0: off)", minimum=0),
            "spectral_norm": Field(False, "bool", "spectral normalisation in D"),
            "n_critic": Field(1, "int", "D updates per G update", minimum=1),
            "r1": Field(0.0, "float", "weight of the R1 penalty on D's input gradient at real "
                        "data (0: off)", minimum=0),
            "checkpoint_every": Field(500, "int", "steps between checkpoints", minimum=1),
            "log_every": Field(10, "int", "steps between history records", minimum=1),
            "time_budget": Field(None, "float", "stop after this many seconds", minimum=0,
                                 exclusive=True),
        },
        "eval": _eval_section("standard"),
    },
    "distill": {
        "data": dict(_DATA, name=Field(None, "str", "data for evaluation (and for the "
                                       "student critic when distill.use_data): default the "
                                       "teacher run's data, else fashion-mnist")),
        "student": {
            "width": Field(0.25, "float", "student channel scale", minimum=0, exclusive=True),
            "d_width": Field(None, "float", "student critic scale (default: width)", minimum=0,
                             exclusive=True),
            "hidden": Field(None, "int", "mlp: hidden units at width 1 (default: the teacher's)",
                            minimum=1),
            "depth": Field(None, "int", "mlp: hidden layers (default: the teacher's)", minimum=1),
            "seed": Field(0, "int", "student initialisation seed", minimum=0),
            "loss": Field(None, "str", "adversarial loss (default: the teacher's)",
                          choices=("ns", "hinge", "ls")),
            "lr": Field(None, "float", "Adam learning rate (default: the teacher's)", minimum=0,
                        exclusive=True),
            "ema": Field(None, "float", "decay of the student's moving average (default: the "
                         "teacher's)", minimum=0),
        },
        "distill": {
            "teacher": Field(None, "str", "teacher checkpoint (or --teacher)"),
            "T": Field(2.0, "float", "temperature of the tempered KL terms", minimum=0,
                       exclusive=True),
            "steps": Field(2000, "int", "iterations", minimum=0),
            "batch_size": Field(64, "int", "samples per batch", minimum=2),
            "use_data": Field(False, "bool", "train the student critic on real data (default: "
                              "black-box, on teacher samples)"),
            "online": Field(False, "bool", "train the teacher in the same loop (needs data)"),
            "init": Field("prune", "str", "student from the teacher's strongest channels, or "
                          "random", choices=("prune", "random")),
            "critic": Field("fresh", "str", "student critic fresh or copied from the teacher",
                            choices=("fresh", "teacher")),
            "output_loss": Field("l1", "str", "output matching loss", choices=("l1", "l2")),
            "seed": Field(0, "int", "seed of the distillation noise", minimum=0),
            "checkpoint_every": Field(500, "int", "steps between checkpoints", minimum=1),
            "log_every": Field(10, "int", "steps between history records", minimum=1),
            "time_budget": Field(None, "float", "stop after this many seconds", minimum=0,
                                 exclusive=True),
            "weights": None,                    # filled below from distill.DEFAULT_WEIGHTS
        },
        "eval": dict(_eval_section("standard"),
                     teacher=Field(True, "bool", "evaluate the teacher too")),
    },
    "eval": {
        "eval": dict(_eval_section("standard"),
                     data=Field(None, "str", "data set (default: the run's data, else "
                                "fashion-mnist)")),
    },
    "sample": {
        "sample": {
            "n": Field(64, "int", "number of samples", minimum=1),
            "seed": Field(0, "int", "noise seed", minimum=0),
            "nrow": Field(None, "int", "images per row (default: about sqrt(n))", minimum=1),
            "label": Field(None, "int", "conditional models: draw this class only", minimum=0),
            "npy": Field(False, "bool", "also write the samples as samples.npy"),
            "data": Field(None, "str", "toy sets: draw the mode centres of this data set"),
        },
    },
    "report": {
        "report": {
            "title": Field("distgan report", "str", "heading of report.md"),
        },
    },
    "demo": {
        "data": {
            "name": Field("fashion-mnist", "str", "the image data set"),
            "fallback": Field("grid25", "str", "toy set used when the data cannot be had",
                              choices=("grid25", "ring8")),
            "subset": Field(None, "int", "train on the first N images only", minimum=2),
        },
        "demo": {
            "budget": Field(240.0, "float", "seconds for the whole demo: the teacher's and "
                            "student's steps are cut to fit", minimum=0, exclusive=True),
            "T": Field(2.0, "float", "distillation temperature", minimum=0, exclusive=True),
            "seed": Field(0, "int", "seed of everything", minimum=0),
        },
        "teacher": {
            # width 0.5, not 1.0: in a few minutes of a busy 2-core machine the narrower
            # teacher gets about three times the steps and reached FID 21 against 27
            # (measured with this demo, 240 s budget, load average ~5)
            "width": Field(0.5, "float", "teacher DCGAN width", minimum=0, exclusive=True),
            "steps": Field(1200, "int", "at most this many steps", minimum=1),
            "batch_size": Field(64, "int", "samples per batch", minimum=2),
            "lr": Field(2e-4, "float", "Adam learning rate", minimum=0, exclusive=True),
        },
        "student": {
            "width": Field(0.125, "float", "student DCGAN width", minimum=0, exclusive=True),
            "steps": Field(400, "int", "at most this many distillation steps", minimum=1),
            "batch_size": Field(64, "int", "samples per batch", minimum=2),
        },
        "toy": {
            "n": Field(100_000, "int", "toy samples", minimum=100),
            "hidden": Field(256, "int", "teacher MLP hidden units", minimum=1),
            "student_width": Field(0.25, "float", "student MLP width (hidden units x this)",
                                   minimum=0, exclusive=True),
            "depth": Field(3, "int", "MLP hidden layers", minimum=1),
            "teacher_steps": Field(3000, "int", "at most this many teacher steps", minimum=1),
            "student_steps": Field(1500, "int", "at most this many distillation steps",
                                   minimum=1),
            "batch_size": Field(256, "int", "samples per batch", minimum=2),
            "lr": Field(1e-3, "float", "Adam learning rate", minimum=0, exclusive=True),
        },
        "eval": {
            "n": Field(2000, "int", "samples per side for FID (2500 on toy sets is plenty)",
                       minimum=10),
            "classifier": Field("auto", "str", "see `distgan train`'s eval.classifier"),
            "profile_repeats": Field(3, "int", "timed sampling calls per batch size",
                                     minimum=1),
        },
    },
}


def _fill_weights():
    from .distill import DEFAULT_WEIGHTS

    SCHEMAS["distill"]["distill"]["weights"] = {
        k: Field(float(v), "float", f"weight of the {k!r} loss term", minimum=0)
        for k, v in DEFAULT_WEIGHTS.items()}


# Settings of --quick / DISTGAN_QUICK=1: seconds-long smoke runs (the tests use them).
QUICK = {
    "train": {"data": {"subset": 256, "n": 2000}, "model": {"width": 0.25, "hidden": 32},
              "train": {"steps": 4, "batch_size": 32},
              "eval": {"n": 64, "classifier": "tiny", "profile_repeats": 1}},
    "distill": {"data": {"subset": 256, "n": 2000}, "student": {"width": 0.125},
                "distill": {"steps": 4, "batch_size": 32},
                "eval": {"n": 64, "classifier": "tiny", "profile_repeats": 1}},
    "eval": {"eval": {"n": 64, "classifier": "tiny", "profile_repeats": 1}},
    "sample": {"sample": {"n": 16}},
    "report": {},
    "demo": {"data": {"subset": 512},
             "teacher": {"width": 0.25, "steps": 6, "batch_size": 32},
             "student": {"width": 0.125, "steps": 4, "batch_size": 32},
             "toy": {"n": 2000, "hidden": 32, "teacher_steps": 20, "student_steps": 10,
                     "batch_size": 64},
             "eval": {"n": 64, "classifier": "tiny", "profile_repeats": 1}},
}


# ---------------------------------------------------------------------------------------
# Reading, merging, checking and writing configurations.

def _unknown(key, known, where):
    hint = difflib.get_close_matches(key, list(known), n=1)
    return ConfigError(f"{where}: unknown key {key!r}"
                       + (f" (did you mean {hint[0]!r}?)" if hint else "")
                       + f"; known keys here: {', '.join(sorted(known))}")


def _merge(schema, base, layer, where, prefix=""):
    """Overlay ``layer`` (user values, checked) on ``base`` (resolved) in place."""
    if not isinstance(layer, dict):
        raise ConfigError(f"{where}: [{prefix.rstrip('.')}] must be a table, got {layer!r}")
    for key, value in layer.items():
        dotted = prefix + key
        if key not in schema:
            if prefix:
                raise _unknown(dotted, [prefix + k for k in schema], where)
            hint = difflib.get_close_matches(key, list(schema), n=1)
            raise ConfigError(f"{where}: unknown section [{key}]"
                              + (f" (did you mean [{hint[0]}]?)" if hint else "")
                              + f"; known sections: {', '.join(f'[{s}]' for s in schema)}")
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {dotted} must be a table of "
                                  f"{', '.join(spec)}, got {value!r}")
            _merge(spec, base.setdefault(key, {}), value, where, dotted + ".")
        else:
            base[key] = spec.check(value, f"{where}: {dotted}")


def _defaults(schema):
    return {k: (_defaults(v) if isinstance(v, dict) else
                (list(v.default) if isinstance(v.default, list) else v.default))
            for k, v in schema.items()}


def load_config(path):
    """Read a TOML file into a dict; syntax errors become :class:`ConfigError`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML configuration file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _parse_set(item):
    """``a.b.c=value`` -> nested dict; the value is read as a TOML value, or as a bare
    string when it is not one (``--set data.name=mnist``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {item!r}: the key must be section.key (e.g. train.steps=100)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    out = cur = {}
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def resolve_config(command, file=None, quick=False, overrides=(), sets=()):
    """The full configuration of ``command``: defaults, then the file, then the quick
    settings, then flag shortcuts (``overrides``: nested dicts), then ``--set`` items.

    Raises :class:`ConfigError` naming any unknown or mistyped key.
    """
    if SCHEMAS["distill"]["distill"]["weights"] is None:
        _fill_weights()
    schema = SCHEMAS[command]
    cfg = _defaults(schema)
    if file is not None:
        _merge(schema, cfg, load_config(file), str(file))
    if quick:
        _merge(schema, cfg, QUICK[command], "--quick")
    for o in overrides:
        _merge(schema, cfg, o, "command line")
    for s in sets:
        _merge(schema, cfg, _parse_set(s), f"--set {s}")
    return cfg


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)                   # a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(cfg, header=None):
    """A TOML document of a nested dict of plain values (``None`` values are left out)."""
    lines = [f"# {h}" for h in (header or "").splitlines()]

    def table(d, name):
        scalars = [(k, v) for k, v in d.items() if v is not None and not isinstance(v, dict)]
        subs = [(k, v) for k, v in d.items() if isinstance(v, dict)]
        if name and (scalars or not subs):
            lines.append("")
            lines.append(f"[{name}]")
        for k, v in scalars:
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in subs:
            table(v, f"{name}.{k}" if name else k)

    table(cfg, "")
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------
# Run folders and small helpers.

def _run_dir(command, out):
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{command}-{stamp}"
        out, i = base, 1
        while out.exists():
            i += 1
            out = base.with_name(f"{base.name}-{i}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _write_json(path, obj):
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _write_config(out, command, cfg, extra=None):
    from . import __version__

    header = (f"distgan {command} configuration (distgan {__version__}, "
              f"{datetime.datetime.now().isoformat(timespec='seconds')})")
    if extra:
        header += "\n" + extra
    (out / "config.toml").write_text(dump_toml(cfg, header))


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def _auto_threads():
    """All cores on an otherwise idle machine, fewer when it is busy: threads on
    oversubscribed cores slow training down (a second thread made a DCGAN step 1.2-1.4x
    slower at load average 4-5 on 2 cores; with OpenBLAS's own threads it was 8x)."""
    n = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return n, None
    return max(1, min(n, int(n - load + 0.5))), load


def _set_threads(arg, say):
    from . import ops

    if arg in (None, "auto"):
        n, load = _auto_threads()
        why = f"auto: load average {load:.1f} on {os.cpu_count()} cores" if load is not None \
            else "auto"
    else:
        try:
            n = int(arg)
        except ValueError:
            raise ConfigError(f"--threads must be 'auto' or a positive integer, got {arg!r}") from None
        if n < 1:
            raise ConfigError(f"--threads must be >= 1, got {n}")
        why = "--threads"
    ops.set_num_threads(n)
    say(f"threads: {ops.get_num_threads()} ({why})")
    return n


def _is_toy_name(name):
    return isinstance(name, str) and name.strip().lower() in ("ring8", "grid25")


def _load_data(dc):
    """A Dataset from a [data] section."""
    from . import datasets

    name = dc["name"]
    if _is_toy_name(name):
        data = datasets.load(name, n=dc.get("n"), seed=dc.get("seed"))
    else:
        data = datasets.load(name)
    if dc.get("subset") and dc["subset"] < len(data):
        data = data.subset(dc["subset"])
    return data


def _is_image(data):
    return len(data.image_shape) == 3


def _fmt_int(n):
    return f"{int(n):,}"


def _fmt_si(n):
    n = float(n)
    for unit, s in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= s:
            return f"{n / s:.2f} {unit}"
    return f"{n:.0f}"


def _fmt_bytes(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _ratio(a, b, better, worse):
    """'4.2x fewer' when a > b, else '1.3x more' (b over a)."""
    if not (a > 0 and b > 0):
        return ""
    return f"{a / b:.1f}x {better}" if a >= b else f"{b / a:.1f}x {worse}"


def _markdown(headers, rows):
    """A Markdown table, columns padded for reading in a terminal."""
    cells = [list(map(str, headers))] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2)
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


# ---------------------------------------------------------------------------------------
# Evaluation helpers shared by the commands.

FAST_RECIPE = {"epochs": 0.2}


def _classifier(choice, data, progress, say):
    """(Classifier, description) for ``eval.classifier`` on image data ``data``."""
    from .classifier import Classifier
    from .evaluate import _reference_set, cache_root, classifier_path, evaluation_classifier
    from . import models

    if choice == "tiny":
        # seconds: a narrow CNN on at most 1024 images, not cached. Its FIDs only
        # compare runs measured with the same tiny classifier.
        n = min(len(data), 1024)
        sub = data.subset(n)
        if sub.labels is None:
            raise ConfigError(f"{data.name}: eval.classifier='tiny' needs labelled data")
        spec = models.classifier(width=0.25, image_shape=data.image_shape,
                                 num_classes=data.num_classes or int(sub.labels.max()) + 1,
                                 feature_dim=32)
        clf = Classifier(spec, seed=0)
        clf.fit((sub.images, sub.labels), steps=20, batch_size=min(64, n), progress=False)
        clf.info = {"test_accuracy": None, "recipe": "tiny"}
        return clf, "tiny (20 steps on ~1000 images; smoke runs only)"
    if choice not in ("standard", "fast", "auto"):
        path = Path(choice).expanduser()
        if not path.exists():
            raise ConfigError(f"eval.classifier: {choice!r} is neither standard, fast, auto, "
                              "tiny nor an existing classifier checkpoint")
        clf = Classifier.load(path)
        return clf, f"{path}"
    ref = _reference_set(data)
    if choice == "auto":
        choice = "standard" if classifier_path(ref).exists() else "fast"
    if choice == "standard":
        cached = classifier_path(ref).exists()
        if not cached:
            say("training the evaluation classifier (once; cached under "
                f"{classifier_path(ref).parent})")
        clf = evaluation_classifier(ref, progress=progress)
    else:
        root = cache_root() / "fast"
        cached = classifier_path(ref, root).exists()
        if not cached:
            say(f"training a fast evaluation classifier ({FAST_RECIPE['epochs']} epoch on "
                f"{len(ref):,} images; cached under {root / 'classifiers'})")
        clf = evaluation_classifier(ref, cache_dir=root, recipe=FAST_RECIPE, progress=progress)
    acc = clf.info.get("test_accuracy")
    desc = f"{choice}" + (f", test accuracy {100 * acc:.1f}%" if acc is not None else "")
    if not cached:
        desc += f", trained in {clf.info.get('train_seconds', 0):.0f} s"
    return clf, desc


def _evaluate(gan, data, ecfg, clf):
    from .evaluate import evaluate

    return evaluate(gan, data, n=ecfg["n"], classifier=clf, seed=ecfg.get("seed", 0))


def _profile(gan, repeats, quick):
    from .evaluate import profile

    return profile(gan, repeats=repeats, batch_sizes=(1, 16) if quick else (1, 256))


def _latency_keys(prof):
    return sorted((k for k in prof if k.startswith("latency_ms_b")),
                  key=lambda k: int(k[len("latency_ms_b"):]))


def _quality_rows(evals):
    """Rows (label, values...) for sample-quality metrics of several models."""
    first = next((e for e in evals if e), None)
    if first is None:
        return []
    rows = []
    if "fid" in first:
        n = first.get("n")
        rows.append((f"FID (n={n}, lower is better)", *[_f(e, "fid", "{:.2f}") for e in evals]))
        rows.append(("KID x 1000", *[("" if not e else f"{1000 * _kid(e):.2f}") for e in evals]))
        rows.append(("precision / recall", *[("" if not e else
                                              f"{e['precision']:.3f} / {e['recall']:.3f}")
                                             for e in evals]))
    else:
        rows.append((f"modes captured (n={first.get('n')})",
                     *[("" if not e else f"{e['modes']} / {e['num_modes']}") for e in evals]))
        rows.append(("high-quality samples", *[_f(e, "high_quality", "{:.1%}") for e in evals]))
        rows.append(("reverse KL of modes", *[_f(e, "reverse_kl", "{:.3f}") for e in evals]))
    return rows


def _kid(e):
    k = e["kid"]
    return k[0] if isinstance(k, (list, tuple)) else k


def _f(e, key, fmt):
    return "" if not e or e.get(key) is None else fmt.format(e[key])


def _cost_rows(profs, ratio=False):
    rows = [("generator params", *[_fmt_int(p["generator_params"]) for p in profs]),
            ("generator MACs / sample", *[_fmt_si(p["generator_macs"]) for p in profs])]
    for k in _latency_keys(profs[0]):
        b = k[len("latency_ms_b"):]
        rows.append((f"sampling latency, batch {b}", *[f"{p[k]:.2f} ms" for p in profs]))
    rows.append(("samples / s", *[f"{p['samples_per_s']:,.0f}" for p in profs]))
    rows.append(("peak sampling memory", *[_fmt_bytes(p["peak_memory_bytes"]) for p in profs]))
    if ratio and len(profs) == 2:
        a, b = profs
        extra = [_ratio(a["generator_params"], b["generator_params"], "fewer", "more"),
                 _ratio(a["generator_macs"], b["generator_macs"], "fewer", "more")]
        extra += [_ratio(a[k], b[k], "faster", "slower") for k in _latency_keys(a)]
        extra += [_ratio(b["samples_per_s"], a["samples_per_s"], "more", "fewer"), ""]
        rows = [r + (e,) for r, e in zip(rows, extra)]
    return rows


def _samples_picture(gan, data, path, n=64, seed=1, title=None):
    """A grid of samples (images) or a scatter over the mode centres (2-D points)."""
    from . import plot

    labels = None
    if gan.num_classes is not None:
        labels = np.arange(n) % gan.num_classes
    x = gan.sample(n, labels=labels, seed=seed)
    if len(gan.image_shape) == 3:
        nrow = gan.num_classes if gan.num_classes and n % gan.num_classes == 0 else None
        plot.grid(x, path=path, nrow=nrow)
    else:
        fig = plot.scatter(x, None if data is None else data.centers, path=path, title=title)
        _close(fig)
    return x


def _compare_picture(models, data, path, n=64, seed=1):
    """Teacher and student side by side from the same noise (and labels)."""
    from . import plot

    first = next(iter(models.values()))
    labels = None
    if first.num_classes is not None:
        labels = np.arange(n) % first.num_classes
    panels = {name: g.sample(n if len(g.image_shape) == 3 else 2500, labels=labels, seed=seed)
              for name, g in models.items()}
    if len(first.image_shape) == 3:
        fig = plot.side_by_side(panels, path=path)
    else:
        fig = plot.scatters(panels, None if data is None else data.centers, path=path)
    _close(fig)


def _fit(gan, data, steps, batch_size, progress, deadline=None, **kw):
    """``gan.fit`` for ``steps`` steps, stopping early at ``deadline``
    (a ``time.perf_counter()`` value); returns (steps done, seconds)."""
    start, t0 = gan.step_count, time.perf_counter()
    budget = None if deadline is None else max(1.0, deadline - t0)
    gan.fit(data, steps=steps, batch_size=batch_size, progress=progress, time_budget=budget, **kw)
    return gan.step_count - start, time.perf_counter() - t0


def _spec_summary(spec):
    return {"name": spec.get("name"), "width": spec.get("width"),
            "latent_dim": spec.get("latent_dim"), "image_shape": spec.get("image_shape"),
            "num_classes": spec.get("num_classes")}


# ---------------------------------------------------------------------------------------
# train

def _model_spec(mc, data):
    from . import models

    kind = mc["kind"]
    if kind == "auto":
        kind = "dcgan" if _is_image(data) else "mlp"
    nc = None
    if mc["conditional"]:
        if data.labels is None:
            raise ConfigError(f"model.conditional = true needs labelled data; {data.name} has "
                              "no labels")
        nc = data.num_classes
    if kind == "dcgan":
        if not _is_image(data):
            raise ConfigError(f"model.kind = 'dcgan' needs images; {data.name} holds "
                              f"{data.image_shape} points: use kind = 'mlp'")
        return models.dcgan(width=mc["width"], latent_dim=mc["latent_dim"] or 100,
                            image_shape=data.image_shape, num_classes=nc, d_width=mc["d_width"])
    if _is_image(data):
        raise ConfigError(f"model.kind = 'mlp' needs 2-D points; {data.name} holds images "
                          f"{data.image_shape}: use kind = 'dcgan'")
    return models.mlp(latent_dim=mc["latent_dim"] or 2, data_dim=data.image_shape[0],
                      hidden=mc["hidden"], depth=mc["depth"], width=mc["width"],
                      d_width=mc["d_width"], num_classes=nc)


def cmd_train(args, cfg, out, say):
    from . import plot
    from .gan import GAN

    tc, ec = cfg["train"], cfg["eval"]
    data = _load_data(cfg["data"])
    say(f"data: {data!r}")
    ckpt = out / "gan.safetensors"
    if ckpt.exists():                   # main() refused this without --resume
        gan = GAN.load(ckpt)
        say(f"resuming {ckpt} at step {gan.step_count}")
    else:
        spec = _model_spec(cfg["model"], data)
        lr = (tc["lr"], tc["lr_d"] or tc["lr"])
        if len(tc["betas"]) != 2:
            raise ConfigError(f"train.betas: expected two numbers, got {tc['betas']!r}")
        gan = GAN(spec, seed=tc["seed"], loss=tc["loss"], lr=lr, betas=tuple(tc["betas"]),
                  ema=tc["ema"], spectral_norm=tc["spectral_norm"], n_critic=tc["n_critic"],
                  r1=tc["r1"])
    if tc["batch_size"] > len(data):
        raise ConfigError(f"train.batch_size = {tc['batch_size']} is larger than the data "
                          f"({len(data)} samples)")
    per_epoch = len(data) // tc["batch_size"]
    total = tc["steps"] if tc["steps"] is not None else int(round(tc["epochs"] * per_epoch))
    todo = max(0, total - gan.step_count)
    say(f"model: {gan!r}")
    say(f"training {todo} steps (batch {tc['batch_size']}, {per_epoch} steps per epoch)")
    deadline = time.perf_counter() + tc["time_budget"] if tc["time_budget"] else None
    done, secs = _fit(gan, data, todo, tc["batch_size"], args.progress, deadline,
                      checkpoint=ckpt, checkpoint_every=tc["checkpoint_every"],
                      log_every=tc["log_every"])
    gan.save(ckpt)
    say(f"trained {done} steps in {secs:.1f} s -> {ckpt}")
    _samples_picture(gan, data, out / "samples.png", n=100 if gan.num_classes else 64,
                     seed=0, title=f"{data.name}, step {gan.step_count}")
    if gan.history["step"]:
        _close(plot.losses(gan.history, out / "losses.png", keys=["d_loss", "g_loss"],
                           title=f"{gan.spec.get('name')} width {gan.spec.get('width')} "
                                 f"on {data.name}"))
    h = gan.history
    entry = {"role": "scratch", "checkpoint": ckpt.name, "spec": _spec_summary(gan.spec),
             "train": {"steps": gan.step_count, "steps_this_run": done, "seconds": secs,
                       "samples_per_s": done * tc["batch_size"] / max(secs, 1e-9),
                       "final_d_loss": h["d_loss"][-1] if h["d_loss"] else None,
                       "final_g_loss": h["g_loss"][-1] if h["g_loss"] else None}}
    _measure({"gan": gan}, {"gan": entry}, data, ec, args, say)
    return {"data": data.name, "data_size": len(data), "models": {"gan": entry}}


def _measure(gans, entries, data, ec, args, say, classifier=None):
    """Evaluate and profile each GAN into its metrics entry; prints a table."""
    names = list(gans)
    if ec.get("enabled", True):
        clf = classifier
        if clf is None and _is_image(data):
            clf, desc = _classifier(ec["classifier"], data, args.progress, say)
            say(f"evaluation classifier: {desc}")
        for k in names:
            t0 = time.perf_counter()
            entries[k]["eval"] = _evaluate(gans[k], data, ec, clf)
            entries[k]["eval_seconds"] = time.perf_counter() - t0
            if clf is not None:
                entries[k]["eval"]["classifier"] = ec["classifier"]
    if ec.get("profile", True):
        for k in names:
            entries[k]["profile"] = _profile(gans[k], ec["profile_repeats"], args.quick)
    rows = []
    if all("profile" in entries[k] for k in names):
        rows += _cost_rows([entries[k]["profile"] for k in names])
    if all("eval" in entries[k] for k in names):
        rows += _quality_rows([entries[k]["eval"] for k in names])
    if rows:
        say("\n" + _markdown([""] + names, rows) + "\n")
    return rows


# ---------------------------------------------------------------------------------------
# distill

def _student_spec(tspec, sc):
    from . import models

    name = tspec.get("name")
    embed = next((l["embed_dim"] for l in tspec["generator"] if l["type"] == "label_concat"),
                 None)
    if name == "dcgan":
        return models.dcgan(width=sc["width"], latent_dim=tspec["latent_dim"],
                            image_shape=tspec["image_shape"], num_classes=tspec["num_classes"],
                            d_width=sc["d_width"], embed_dim=embed)
    if name == "mlp":
        lin = [l for l in tspec["generator"] if l["type"] == "linear"]
        hidden = sc["hidden"] or max(1, int(round(lin[0]["out_features"] / tspec["width"])))
        return models.mlp(latent_dim=tspec["latent_dim"], data_dim=tspec["image_shape"][0],
                          hidden=hidden, depth=sc["depth"] or len(lin) - 1, width=sc["width"],
                          d_width=sc["d_width"], num_classes=tspec["num_classes"])
    raise ConfigError(f"the teacher is a {name!r} model; distill builds students of dcgan and "
                      "mlp teachers")


def _run_data_section(ckpt):
    """The [data] section of the run folder a checkpoint was written in, if any."""
    cfg_path = Path(ckpt).parent / "config.toml"
    if not cfg_path.exists():
        return None
    try:
        d = load_config(cfg_path).get("data")
    except ConfigError:
        return None
    if isinstance(d, dict) and isinstance(d.get("name"), str):
        return {k: d.get(k) for k in ("name", "n", "seed")}
    return None


def cmd_distill(args, cfg, out, say):
    from . import plot
    from .distill import distill
    from .gan import GAN

    dc, sc, ec = cfg["distill"], cfg["student"], cfg["eval"]
    tpath = dc["teacher"]
    if not tpath:
        raise ConfigError("no teacher: set distill.teacher in the config or pass --teacher PATH")
    teacher = GAN.load(Path(tpath).expanduser())
    say(f"teacher: {teacher!r}")
    dsec = dict(cfg["data"])
    if dsec["name"] is None:
        run = _run_data_section(tpath)
        if run is not None:
            dsec.update({k: v for k, v in run.items() if v is not None and dsec.get(k) is None})
            say(f"data: {dsec['name']} (from the teacher's run folder)")
        else:
            dsec["name"] = "fashion-mnist"
    need_data = dc["use_data"] or dc["online"] or ec["enabled"]
    data = _load_data(dsec) if need_data else None
    if data is not None and tuple(data.image_shape) != teacher.image_shape:
        raise ConfigError(f"data {data.name} holds {data.image_shape} samples, the teacher makes "
                          f"{teacher.image_shape}: set data.name")
    spec = _student_spec(teacher.spec, sc)
    tcfg = teacher.config
    student = GAN(spec, seed=sc["seed"], loss=sc["loss"] or tcfg["loss"],
                  lr=sc["lr"] or tuple(tcfg["lr"]), betas=tuple(tcfg["betas"]),
                  ema=tcfg["ema"] if sc["ema"] is None else sc["ema"],
                  spectral_norm=tcfg["spectral_norm"])
    say(f"student: {student!r}")
    clf = None
    if data is not None and _is_image(data) and (ec["enabled"] or dc["weights"]["cls"] > 0):
        clf, desc = _classifier(ec["classifier"], data, args.progress, say)
        say(f"evaluation classifier: {desc}")
    ckpt = out / "student.safetensors"
    say(f"distilling at T={dc['T']} for {dc['steps']} steps "
        f"({'real data' if dc['use_data'] else 'black-box: teacher samples'} for the critic; "
        f"weights {dc['weights']})")
    t0 = time.perf_counter()
    student, hist = distill(teacher, student, T=dc["T"],
                            data=data if (dc["use_data"] or dc["online"]) else None,
                            steps=dc["steps"], batch_size=dc["batch_size"],
                            weights=dc["weights"], online=dc["online"], init=dc["init"],
                            seed=dc["seed"], critic=dc["critic"], output_loss=dc["output_loss"],
                            classifier=clf if dc["weights"]["cls"] > 0 else None,
                            progress=args.progress, checkpoint=ckpt,
                            checkpoint_every=dc["checkpoint_every"], log_every=dc["log_every"],
                            time_budget=dc["time_budget"])
    secs = time.perf_counter() - t0
    say(f"distilled {student.step_count} steps in {secs:.1f} s -> {ckpt}")
    if dc["online"]:
        teacher.save(out / "teacher.safetensors")
    _compare_picture({"teacher": teacher, "student": student}, data, out / "samples.png")
    if hist["step"]:
        _close(plot.losses(hist, out / "losses.png", title=f"distillation at T={dc['T']}"))
    entries = {
        "teacher": {"role": "teacher", "checkpoint": str(Path(tpath).resolve()),
                    "spec": _spec_summary(teacher.spec)},
        "student": {"role": "distilled", "checkpoint": ckpt.name, "T": dc["T"],
                    "spec": _spec_summary(student.spec),
                    "distill": {"steps": student.step_count, "seconds": secs,
                                "weights": dc["weights"],
                                "init_from_teacher": student.config.get("init_from_teacher")}},
    }
    gans = {"teacher": teacher, "student": student}
    if not ec["teacher"]:
        gans.pop("teacher")
    if data is not None or ec["profile"]:
        _measure(gans, entries, data, ec if data is not None else dict(ec, enabled=False),
                 args, say, classifier=clf)
    return {"data": None if data is None else data.name, "T": dc["T"], "models": entries}


# ---------------------------------------------------------------------------------------
# eval, sample

def cmd_eval(args, cfg, out, say):
    from .gan import GAN

    ec = cfg["eval"]
    gans, entries = {}, {}
    for i, p in enumerate(args.checkpoints):
        g = GAN.load(Path(p).expanduser())
        name = Path(p).stem if Path(p).stem not in gans else f"{Path(p).stem}-{i}"
        if Path(p).stem in ("gan", "student", "teacher") and Path(p).parent.name:
            name = f"{Path(p).parent.name}/{Path(p).stem}"
        gans[name] = g
        entries[name] = {"role": "distilled" if "distill" in g.history else "scratch",
                         "checkpoint": str(Path(p).resolve()), "spec": _spec_summary(g.spec),
                         "steps": g.step_count}
        say(f"{name}: {g!r}")
    dsec = {"name": ec["data"], "n": None, "seed": None, "subset": None}
    if dsec["name"] is None:
        run = _run_data_section(args.checkpoints[0])
        dsec.update(run or {"name": "fashion-mnist"})
    data = _load_data(dsec) if ec["enabled"] else None
    if data is not None:
        say(f"data: {data!r}")
        shapes = {g.image_shape for g in gans.values()}
        if shapes != {tuple(data.image_shape)}:
            raise ConfigError(f"the checkpoints make {sorted(shapes)} samples, {data.name} holds "
                              f"{data.image_shape}: pass --data")
    _measure(gans, entries, data, ec if data is not None else dict(ec, enabled=False),
             args, say)
    for name, g in gans.items():
        _samples_picture(g, data, out / f"samples_{name.replace('/', '_')}.png", title=name)
    fids = [dict(name=k, params=e["profile"]["generator_params"], fid=e["eval"]["fid"],
                 kind=e["role"]) for k, e in entries.items()
            if "profile" in e and "eval" in e and "fid" in e["eval"]]
    if fids:
        from . import plot
        _close(plot.fid_vs_params(fids, out / "fid_vs_params.png"))
    return {"data": None if data is None else data.name, "models": entries}


def cmd_sample(args, cfg, out, say):
    from . import plot
    from .gan import GAN

    sc = cfg["sample"]
    g = GAN.load(Path(args.checkpoint).expanduser())
    say(f"{args.checkpoint}: {g!r}")
    labels = None
    if sc["label"] is not None:
        if g.num_classes is None:
            raise ConfigError("sample.label is for conditional models; this one is not")
        if sc["label"] >= g.num_classes:
            raise ConfigError(f"sample.label must be < {g.num_classes}, got {sc['label']}")
        labels = sc["label"]
    elif g.num_classes is not None:
        labels = np.arange(sc["n"]) % g.num_classes
    t0 = time.perf_counter()
    x = g.sample(sc["n"], labels=labels, seed=sc["seed"])
    secs = time.perf_counter() - t0
    if len(g.image_shape) == 3:
        nrow = sc["nrow"] or (g.num_classes if g.num_classes and labels is not None
                              and np.ndim(labels) == 1 and sc["n"] >= g.num_classes else None)
        plot.grid(x, out / "samples.png", nrow=nrow)
    else:
        centers = None
        name = sc["data"] or (_run_data_section(args.checkpoint) or {}).get("name")
        if _is_toy_name(name):
            from . import datasets
            centers = datasets.load(name, n=100).centers
        _close(plot.scatter(x, centers, out / "samples.png", title=Path(args.checkpoint).name))
    if sc["npy"]:
        np.save(out / "samples.npy", x)
    say(f"{sc['n']} samples in {secs * 1e3:.1f} ms -> {out / 'samples.png'}")
    return {"checkpoint": str(Path(args.checkpoint).resolve()), "n": sc["n"],
            "seconds": secs, "image_shape": list(g.image_shape)}


# ---------------------------------------------------------------------------------------
# report

def _report_rows(run_dirs, say):
    rows, teachers = [], set()
    for d in run_dirs:
        d = Path(d)
        mp = d / "metrics.json"
        if not mp.exists():
            say(f"skipping {d}: no metrics.json")
            continue
        try:
            m = json.loads(mp.read_text())
        except ValueError as e:
            raise ConfigError(f"{mp}: not valid JSON: {e}") from None
        for name, e in (m.get("models") or {}).items():
            ck = e.get("checkpoint")
            if ck and not os.path.isabs(ck):
                ck = str((d / ck).resolve())
            rows.append({"run": d.name, "command": m.get("command"), "name": name,
                         "role": e.get("role"), "checkpoint": ck, "T": e.get("T"),
                         "spec": e.get("spec") or {}, "eval": e.get("eval") or {},
                         "profile": e.get("profile") or {}, "data": m.get("data")})
            if e.get("role") == "teacher" and ck:
                teachers.add(ck)
    for r in rows:                     # a trained GAN distilled by another run is a teacher
        if r["role"] == "scratch" and r["checkpoint"] in teachers:
            r["role"] = "teacher"
    return rows


def cmd_report(args, cfg, out, say):
    from . import plot

    rows = _report_rows(args.runs, say)
    if not rows:
        raise ConfigError("report: none of the given folders holds a metrics.json with models")
    headers = ["run", "model", "role", "data", "width", "G params", "G MACs", "latency b1",
               "FID / modes", "T"]
    table = []
    for r in rows:
        p, e = r["profile"], r["eval"]
        q = ""
        if "fid" in e:
            q = f"{e['fid']:.2f}"
        elif "modes" in e:
            q = f"{e['modes']}/{e['num_modes']}"
        table.append([r["run"], r["name"], r["role"], r["data"] or "",
                      r["spec"].get("width", ""),
                      _fmt_int(p["generator_params"]) if p else "",
                      _fmt_si(p["generator_macs"]) if p else "",
                      f"{p['latency_ms_b1']:.2f} ms" if "latency_ms_b1" in p else "", q,
                      r["T"] if r["T"] is not None else ""])
    md = _markdown(headers, table)
    say("\n" + md + "\n")
    pics = []
    pts = [dict(name=f"{r['run']}/{r['name']}", params=r["profile"]["generator_params"],
                fid=r["eval"]["fid"], kind=r["role"]) for r in rows
           if r["profile"] and "fid" in r["eval"]]
    if pts:
        _close(plot.fid_vs_params(pts, out / "fid_vs_params.png"))
        pics.append("fid_vs_params.png")
    byT = {}
    for r in rows:
        if r["role"] == "distilled" and r["T"] is not None and "fid" in r["eval"]:
            byT.setdefault(float(r["T"]), []).append(r["eval"]["fid"])
    if len(byT) >= 2:
        Ts = sorted(byT)
        _close(plot.fid_vs_T(Ts, [float(np.mean(byT[t])) for t in Ts], out / "fid_vs_T.png",
                             label="distilled students"))
        pics.append("fid_vs_T.png")
    text = f"# {cfg['report']['title']}\n\n{md}\n"
    for p in pics:
        text += f"\n![{p}]({p})\n"
    (out / "report.md").write_text(text)
    say(f"report: {out / 'report.md'}")
    return {"rows": rows}


# ---------------------------------------------------------------------------------------
# demo

def cmd_demo(args, cfg, out, say):
    from . import datasets

    t_start = args.t_start
    name = cfg["data"]["name"]
    if _is_toy_name(name):
        return _demo_toy(args, cfg, out, say, t_start, reason=None)
    try:
        data = datasets.load(name)
    except datasets.DatasetError as e:
        first = str(e).strip().splitlines()[0]
        say(f"\n{name} cannot be had here ({first}).\n"
            f"Running the demo on the built-in {cfg['data']['fallback']} toy set instead "
            f"(2-D points, MLP models, mode coverage). To get Fashion-MNIST: "
            f"apt-get install dataset-fashion-mnist, or set DISTGAN_DATA to a folder "
            f"holding its IDX files.\n")
        return _demo_toy(args, cfg, out, say, t_start, reason=first)
    return _demo_images(args, cfg, data, out, say, t_start)


def _split_budget(t_start, budget, reserve, share):
    """Deadline for the next phase: ``share`` of what is left of ``budget`` after
    ``reserve`` seconds are kept for the phases that follow."""
    left = budget - (time.perf_counter() - t_start) - reserve
    return time.perf_counter() + max(0.0, share * left)


def _demo_images(args, cfg, data, out, say, t_start):
    from . import models, plot
    from .distill import distill
    from .gan import GAN

    tc, sc, ec, dm = cfg["teacher"], cfg["student"], cfg["eval"], cfg["demo"]
    train = data.subset(cfg["data"]["subset"]) if cfg["data"]["subset"] else data
    say(f"data: {train!r}")
    budget = dm["budget"]

    say("\n[1/4] evaluation classifier")
    clf, desc = _classifier(ec["classifier"], data, args.progress, say)
    say(f"      {desc}")

    # what is left is shared: teacher 70 %, student the rest, after keeping a reserve
    # for evaluation and pictures (a fifth of the budget, at least 20 s)
    reserve = 0 if args.quick else max(20.0, 0.2 * budget)
    say(f"\n[2/4] teacher: DCGAN width {tc['width']}, up to {tc['steps']} steps")
    teacher = GAN(models.dcgan(width=tc["width"], image_shape=data.image_shape),
                  seed=dm["seed"], lr=tc["lr"])
    deadline = None if args.quick else _split_budget(t_start, budget, reserve, 0.7)
    t_steps, t_secs = _fit(teacher, train, tc["steps"], tc["batch_size"], args.progress,
                           deadline, log_every=5)
    teacher.save(out / "teacher.safetensors")
    say(f"      {t_steps} steps in {t_secs:.0f} s"
        + ("" if t_steps == tc["steps"] else " (cut to fit the time budget)"))

    from .distill import DEFAULT_WEIGHTS
    say(f"\n[3/4] student: DCGAN width {sc['width']}, distilled for up to {sc['steps']} "
        f"steps (black-box; loss weights {DEFAULT_WEIGHTS}; T={dm['T']} for the "
        f"tempered terms kd and cls)")
    student = GAN(models.dcgan(width=sc["width"], image_shape=data.image_shape),
                  seed=dm["seed"], lr=tc["lr"])
    budget_s = None
    if not args.quick:
        budget_s = max(1.0, _split_budget(t_start, budget, reserve, 1.0) - time.perf_counter())
    t0 = time.perf_counter()
    student, hist = distill(teacher, student, T=dm["T"], steps=sc["steps"],
                            batch_size=sc["batch_size"], seed=dm["seed"],
                            progress=args.progress, time_budget=budget_s, log_every=5)
    s_secs = time.perf_counter() - t0
    s_steps = student.step_count
    student.save(out / "student.safetensors")
    say(f"      {s_steps} steps in {s_secs:.0f} s"
        + ("" if s_steps == sc["steps"] else " (cut to fit the time budget)"))

    say(f"\n[4/4] evaluation: cost, and FID on {min(ec['n'], len(data))} samples")
    gans = {f"teacher (width {tc['width']})": teacher,
            f"student (width {sc['width']})": student}
    entries = {}
    for (label, g), role in zip(gans.items(), ("teacher", "distilled")):
        entries[label] = {"role": role, "spec": _spec_summary(g.spec),
                          "checkpoint": "teacher.safetensors" if role == "teacher"
                          else "student.safetensors",
                          "profile": _profile(g, ec["profile_repeats"], args.quick),
                          "eval": _evaluate(g, data, ec, clf)}
    entries[f"student (width {sc['width']})"]["T"] = dm["T"]
    teacher_e, student_e = entries.values()
    teacher_e["train"] = {"steps": t_steps, "seconds": t_secs}
    student_e["distill"] = {"steps": s_steps, "seconds": s_secs, "T": dm["T"],
                            "init_from_teacher": student.config.get("init_from_teacher")}
    rows = _cost_rows([teacher_e["profile"], student_e["profile"]], ratio=True)
    rows += [r + ("",) for r in _quality_rows([teacher_e["eval"], student_e["eval"]])]
    rows.append(("trained for", f"{t_steps} steps, {t_secs:.0f} s",
                 f"{s_steps} steps, {s_secs:.0f} s", ""))
    table = _markdown(["", *gans, "student vs teacher"], rows)

    plot.grid(teacher.sample(64, seed=1), out / "teacher_samples.png", nrow=8)
    plot.grid(student.sample(64, seed=1), out / "student_samples.png", nrow=8)
    _compare_picture(gans, data, out / "teacher_vs_student.png")
    _close(plot.losses(teacher.history, out / "teacher_losses.png", keys=["d_loss", "g_loss"],
                       title="teacher"))
    if hist["step"]:
        _close(plot.losses(hist, out / "student_losses.png", title=f"distillation, T={dm['T']}"))
    (out / "table.md").write_text(table + "\n")
    say(f"\nteacher vs student on {data.name} (evaluation classifier: {desc}; "
        f"{_threads_note()}):\n")
    say(table)
    say(f"\nsamples side by side: {out / 'teacher_vs_student.png'}")
    return {"data": data.name, "T": dm["T"], "classifier": desc, "models": entries,
            "fallback": None}


def _threads_note():
    from . import ops

    n = ops.get_num_threads()
    return f"{n} thread{'s' if n != 1 else ''}"


def _demo_toy(args, cfg, out, say, t_start, reason):
    from . import datasets, models, plot
    from .distill import DEFAULT_WEIGHTS, distill
    from .gan import GAN

    tc, ec, dm = cfg["toy"], cfg["eval"], cfg["demo"]
    name = cfg["data"]["fallback"] if not _is_toy_name(cfg["data"]["name"]) else cfg["data"]["name"]
    data = datasets.load(name, n=tc["n"], seed=dm["seed"])
    say(f"data: {data!r}")
    budget = dm["budget"]
    reserve = 0 if args.quick else 10.0
    sw = tc["student_width"]

    say(f"\n[1/3] teacher: MLP {tc['depth']} x {tc['hidden']}, up to {tc['teacher_steps']} steps")
    teacher = GAN(models.mlp(latent_dim=2, hidden=tc["hidden"], depth=tc["depth"]),
                  seed=dm["seed"], lr=tc["lr"])
    deadline = None if args.quick else _split_budget(t_start, budget, reserve, 0.7)
    t_steps, t_secs = _fit(teacher, data, tc["teacher_steps"], tc["batch_size"], args.progress,
                           deadline)
    teacher.save(out / "teacher.safetensors")
    say(f"      {t_steps} steps in {t_secs:.0f} s")

    say(f"\n[2/3] student: MLP width {sw}, distilled (loss weights {DEFAULT_WEIGHTS})")
    student = GAN(models.mlp(latent_dim=2, hidden=tc["hidden"], depth=tc["depth"], width=sw),
                  seed=dm["seed"], lr=tc["lr"])
    budget_s = None
    if not args.quick:
        budget_s = max(1.0, _split_budget(t_start, budget, reserve, 1.0) - time.perf_counter())
    t0 = time.perf_counter()
    student, hist = distill(teacher, student, T=dm["T"], steps=tc["student_steps"],
                            batch_size=tc["batch_size"], seed=dm["seed"],
                            progress=args.progress, time_budget=budget_s)
    s_secs = time.perf_counter() - t0
    s_steps = student.step_count
    student.save(out / "student.safetensors")
    say(f"      {s_steps} steps in {s_secs:.0f} s")

    say("\n[3/3] evaluation: cost and mode coverage")
    n = max(ec["n"], 100)
    gans = {f"teacher (hidden {tc['hidden']})": teacher,
            f"student (width {sw})": student}
    entries = {}
    for (label, g), role in zip(gans.items(), ("teacher", "distilled")):
        entries[label] = {"role": role, "spec": _spec_summary(g.spec),
                          "checkpoint": f"{'teacher' if role == 'teacher' else 'student'}"
                                        ".safetensors",
                          "profile": _profile(g, ec["profile_repeats"], args.quick),
                          "eval": _evaluate(g, data, dict(ec, n=n), None)}
    teacher_e, student_e = entries.values()
    student_e["T"] = dm["T"]
    teacher_e["train"] = {"steps": t_steps, "seconds": t_secs}
    student_e["distill"] = {"steps": s_steps, "seconds": s_secs, "T": dm["T"]}
    rows = _cost_rows([teacher_e["profile"], student_e["profile"]], ratio=True)
    rows += [r + ("",) for r in _quality_rows([teacher_e["eval"], student_e["eval"]])]
    rows.append(("trained for", f"{t_steps} steps, {t_secs:.0f} s",
                 f"{s_steps} steps, {s_secs:.0f} s", ""))
    table = _markdown(["", *gans, "student vs teacher"], rows)
    _compare_picture(gans, data, out / "teacher_vs_student.png")
    _close(plot.scatter(data.images[:2500], data.centers, out / "data.png", title=data.name))
    _close(plot.losses(teacher.history, out / "teacher_losses.png", keys=["d_loss", "g_loss"],
                       title="teacher"))
    (out / "table.md").write_text(table + "\n")
    say(f"\nteacher vs student on {data.name} ({_threads_note()}):\n")
    say(table)
    say(f"\nscatter plots over the {len(data.centers)} mode centres: "
        f"{out / 'teacher_vs_student.png'}")
    return {"data": data.name, "T": dm["T"], "models": entries, "fallback": reason}


# ---------------------------------------------------------------------------------------
# The parser.

_EPILOG = {
    "train": "Example: distgan train examples/teacher.toml --out runs/teacher --set train.steps=3000",
    "distill": "Example: distgan distill examples/distill.toml --teacher runs/teacher/gan.safetensors",
    "eval": "Example: distgan eval runs/teacher/gan.safetensors runs/distill/student.safetensors",
    "sample": "Example: distgan sample runs/teacher/gan.safetensors --n 100 --out runs/samples",
    "report": "Example: distgan report runs/teacher runs/distill-* --out runs/report",
    "demo": "Example: distgan demo            (distgan demo --quick: a seconds-long smoke run)",
}


def _schema_help(command):
    """The keys of a command's configuration with their defaults, for --help."""
    if SCHEMAS["distill"]["distill"]["weights"] is None:
        _fill_weights()
    lines = ["configuration keys (TOML sections; override one with --set section.key=value):"]

    def walk(schema, prefix):
        for k, v in schema.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                d = "unset" if v.default is None else _toml_value(v.default)
                lines.append(f"  {prefix}{k} = {d}")
                lines.extend(textwrap.wrap(v.help, 86, initial_indent="      ",
                                           subsequent_indent="      "))
    walk(SCHEMAS[command], "")
    return "\n".join(lines)


def _parser():
    ap = argparse.ArgumentParser(
        prog="distgan", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train GANs and distil them into small, fast students.",
        epilog="Run `distgan <command> --help` for a command's options and configuration keys.")
    from . import __version__
    ap.add_argument("--version", action="version", version=f"distgan {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="command")
    sub.required = True

    def common(p, config=True):
        if config:
            p.add_argument("config", nargs="?", help="TOML configuration file")
        p.add_argument("--out", help="run folder (default runs/<command>-<timestamp>)")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override one configuration key, e.g. --set train.steps=100")
        p.add_argument("--quick", action="store_true",
                       help="tiny settings: a seconds-long smoke run (also DISTGAN_QUICK=1)")
        p.add_argument("--threads", default="auto",
                       help="threads of the core: a number, or auto (all cores when the "
                            "machine is idle, 1 when it is busy)")
        p.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="progress bars (default: when stderr is a terminal)")
        p.add_argument("--no-progress", dest="progress", action="store_false")
        p.add_argument("--debug", action="store_true", help="full tracebacks on errors")

    def new(name, help, config=True, description=None):
        p = sub.add_parser(name, help=help, description=textwrap.fill(description or help, 88)
                           + "\n\n" + _schema_help(name), epilog=_EPILOG[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        common(p, config)
        return p

    p = new("train", "train a GAN (a teacher, or a baseline from scratch)",
            description="Train a GAN. Writes gan.safetensors (checkpointed during training), "
                        "samples.png, losses.png, metrics.json (training speed, FID/KID/"
                        "precision/recall or mode statistics, cost) and config.toml.")
    p.add_argument("--data", help="data set (data.name)")
    p.add_argument("--steps", type=int, help="training steps (train.steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose gan.safetensors is in --out")

    p = new("distill", "distil a trained GAN into a smaller student",
            description="Distil a teacher checkpoint into a student. Writes "
                        "student.safetensors, samples.png (teacher and student from the same "
                        "noise), losses.png, metrics.json and config.toml.")
    p.add_argument("--teacher", help="teacher checkpoint (distill.teacher)")
    p.add_argument("--T", type=float, help="temperature (distill.T)")
    p.add_argument("--steps", type=int, help="distillation steps (distill.steps)")
    p.add_argument("--data", help="data set for evaluation (data.name)")

    p = new("eval", "evaluate checkpoints: FID, KID, precision/recall (or modes) and cost",
            config=False)
    p.add_argument("checkpoints", nargs="+", help="GAN checkpoints (.safetensors)")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--data", help="data set (eval.data)")
    p.add_argument("--n", type=int, help="samples per side (eval.n)")

    p = new("sample", "draw samples from a checkpoint into a PNG", config=False)
    p.add_argument("checkpoint", help="GAN checkpoint (.safetensors)")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--n", type=int, help="number of samples (sample.n)")
    p.add_argument("--seed", type=int, help="noise seed (sample.seed)")

    p = new("report", "collect run folders into a table and plots", config=False)
    p.add_argument("runs", nargs="+", help="run folders holding metrics.json")
    p.add_argument("--config", help="TOML configuration file")

    p = new("demo", "train a teacher on Fashion-MNIST, distil a student, compare them",
            description="The five-minute tour: trains a DCGAN teacher (width 0.5) on "
                        "Fashion-MNIST, distils a student four times narrower, prints the teacher-"
                        "versus-student table (parameters, MACs, latency, FID) and writes "
                        "sample grids. The steps are cut to fit demo.budget seconds. Without "
                        "the data set it says so and runs on the grid25 toy set instead.")
    p.add_argument("--data", help="data set (data.name); grid25 or ring8 run the toy demo")
    p.add_argument("--budget", type=float, help="seconds for the whole demo (demo.budget)")
    return ap


def _overrides(args):
    c = args.command
    o = {}
    if c == "train":
        if args.data is not None:
            o["data"] = {"name": args.data}
        if args.steps is not None:
            o["train"] = {"steps": args.steps}
    elif c == "distill":
        d = {k: v for k, v in (("teacher", args.teacher), ("T", args.T), ("steps", args.steps))
             if v is not None}
        if d:
            o["distill"] = d
        if args.data is not None:
            o["data"] = {"name": args.data}
    elif c == "eval":
        e = {k: v for k, v in (("data", args.data), ("n", args.n)) if v is not None}
        if e:
            o["eval"] = e
    elif c == "sample":
        s = {k: v for k, v in (("n", args.n), ("seed", args.seed)) if v is not None}
        if s:
            o["sample"] = s
    elif c == "demo":
        if args.data is not None:
            o["data"] = {"name": args.data}
        if args.budget is not None:
            o["demo"] = {"budget": args.budget}
    return [o] if o else []


_COMMANDS = {"train": cmd_train, "distill": cmd_distill, "eval": cmd_eval, "sample": cmd_sample,
             "report": cmd_report, "demo": cmd_demo}


def main(argv=None):
    """Entry point of the ``distgan`` console script and ``python -m distgan``.

    Returns the exit status: 0 done, 1 the run failed, 2 bad arguments or configuration.
    """
    from . import checkpoint, datasets
    from .gan import DivergenceError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.t_start = time.perf_counter()
    args.quick = bool(args.quick or os.environ.get("DISTGAN_QUICK") == "1")
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    debug = args.debug or os.environ.get("DISTGAN_DEBUG") == "1"

    def say(msg=""):
        print(msg, flush=True)

    def fail(msg, status):
        print(f"distgan {args.command}: error: {msg}", file=sys.stderr, flush=True)
        return status

    try:
        cfg = resolve_config(args.command, getattr(args, "config", None), args.quick,
                             _overrides(args), args.sets)
    except ConfigError as e:
        if debug:
            raise
        return fail(e, 2)
    try:
        if args.command == "distill" and not cfg["distill"]["teacher"]:
            raise ConfigError("no teacher: set distill.teacher in the config or pass "
                              "--teacher PATH")
        threads = _set_threads(args.threads, say)
        out = _run_dir(args.command, args.out)
        if args.command == "train" and (out / "gan.safetensors").exists() and not args.resume:
            raise ConfigError(f"{out / 'gan.safetensors'} exists: pass --resume to continue "
                              "that run, or choose another --out")
        say(f"run folder: {out}")
        if args.quick:
            say("quick mode: tiny settings for a smoke run (the numbers mean nothing)")
        _write_config(out, args.command, cfg, extra="command line: distgan " + " ".join(argv))
        result = _COMMANDS[args.command](args, cfg, out, say)
        from . import __version__
        metrics = {"command": args.command, "argv": argv, "distgan_version": __version__,
                   "threads": threads, "quick": args.quick,
                   "wall_seconds": time.perf_counter() - args.t_start, **result}
        _write_json(out / "metrics.json", metrics)
        say(f"\ndone in {metrics['wall_seconds']:.0f} s; run folder {out}: "
            + ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))
        return 0
    except ConfigError as e:
        if debug:
            raise
        return fail(e, 2)
    except (datasets.DatasetError, checkpoint.CheckpointError, DivergenceError, ValueError,
            TypeError, OSError) as e:
        if debug:
            raise
        return fail(f"{type(e).__name__}: {e} (--debug shows the traceback)", 1)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":                 # pragma: no cover
    sys.exit(main())
