"""Multi-digit SVHN (Jaderberg et al. 2015, Sec. 4.2): CNN, ST-CNN Single and ST-CNN Multi, sequence error.

Cells ``cnn``, ``st-single``, ``st-multi`` (:mod:`stnkit.models.svhn`). Data: real SVHN when ``--data-dir`` is a
format-1 folder (``train/`` and ``test/`` with ``digitStruct.mat``, :func:`find_svhn`), else the multi-digit MNIST
proxy (:class:`stnkit.data.MultiDigitMNIST`, 1-5 MNIST digits on 64x64 canvases) built from the MNIST folder that
``--data-dir`` names (or ``$STNKIT_DATA``, then the cache). ``stnkit.training.fit`` trains single-label classifiers
(cross-entropy on one logit vector per image), so each cell brings its own seed function (:func:`train_seed`): a
seeded SGD/Adam loop on :func:`stnkit.losses.sequence_loss`, batch ``k`` of a seed a pure function of ``(seed,
k)``, a checkpoint every ``eval_every`` steps (resume), sequence error and per-digit accuracy on the held-out
test set at the end. After the cells the three models' training steps are timed side by side on one input
(:func:`stnkit.bench.svhn.run_svhn_steps`; the paper: ST-CNN Multi "only 6 % slower"). Figure: test inputs with
each transformer's attended region in input pixels (:meth:`stnkit.models.svhn.SequenceNet.attended_regions`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from stnkit.reproduce.experiment import Budget, Cell, Experiment, SeedRun
from stnkit.reproduce.results import atomic_write_text, fmt, markdown_table

__all__ = ["EXPERIMENT", "PAPER", "PAPER_RATIO", "SequenceData", "evaluate", "find_svhn", "load_data",
           "region_rows", "render_markdown", "train_seed"]

NAME = "svhn"
#: The paper's Table 2, sequence error % on SVHN at 64x64 and 128x128 crops ("CNN (ours)", ST-CNN Single, ST-CNN
#: Multi); PAPER.md records Multi's 3.6 / 3.9 and the previous best (DRAM) 3.9 / 4.5.
PAPER = {"cnn": {"64": 4.0, "128": 5.6}, "st-single": {"64": 3.7, "128": 3.9}, "st-multi": {"64": 3.6, "128": 3.9}}
PAPER_PREVIOUS_BEST = {"64": 3.9, "128": 4.5}
#: ST-CNN Multi / CNN training-step time in the paper ("only 6 % slower").
PAPER_RATIO = 1.06
MODELS = {"cnn": ("svhn-cnn", "CNN (Goodfellow et al.'s 11 layers)"),
          "st-single": ("svhn-st-single", "ST-CNN Single (one transformer on the input)"),
          "st-multi": ("svhn-st-multi", "ST-CNN Multi (a transformer before each of conv 1-4)")}
CELLS = tuple(Cell(key, label, {"model": model}, PAPER[key]["64"]) for key, (model, label) in MODELS.items())
MNIST_VAL = 5000  # the last MNIST train digits: the proxy's validation pool (the rest is the training pool)
FIGURE_IMAGES = 6

_COMMON = {"loc_lr_scale": 0.1, "momentum": 0.9, "lr_gamma": 0.1, "val_size": 2000, "test_size": 10000,
           "eval_batch": 250, "workers": 0, "device": "auto"}
#: ``smoke``: seconds (tests). ``cpu-2.5k`` (superseded by ``cpu-2k``; its run, ``results/svhn/cpu-2.5k/``,
#: learnt no digit): width 0.25 (1.5M parameters, the paper's 23M at width 1), 2,500 steps of batch 32, Adam lr
#: 1e-3 with cosine decay (SGD at lr 0.01 barely moves in so few steps), dropout 0.1 (0.5 slows such a short run),
#: no weight decay, localisation lr x0.1 (the paper's), the proxy's defaults (1-5 digits, rows anywhere on the
#: canvas). ``cpu-2k``: ``cpu-2.5k``'s recipe at 2,000 steps with BatchNorm in the sequence CNN (not the paper's:
#: without it the CNN can sit at the label marginals for thousands of steps) and an SVHN-like proxy: 1-3 digits
#: (SVHN's are mostly 2-3) and rows near the centre (``shift`` 0.2; SVHN's crops are centred on the digits' box),
#: on which the CNN learns to read within the budget (probes: ``results/svhn/NOTES.md``); about 24 minutes for
#: the three cells on an idle machine even at one thread (2,000 x (0.21 + 0.26 + 0.25) s: the CNN's one-thread
#: step at low load times the ST models' step ratios). ``paper``: App. A.5 as
#: PAPER.md transcribes it: SGD (momentum 0.9: A.5 names none; ours), lr 0.01 divided by 10 every 80k iterations,
#: 400k iterations of batch 128, weight decay 5e-4, dropout 0.5 on every layer but the first conv and the
#: localisation nets, localisation lr x0.1, 5k validation images, full width; on real SVHN 64x64 crops are taken
#: at random from 76x76 resized boxes (Goodfellow et al.'s 54/64 ratio), centred at test; one seed (the paper
#: reports one number per model).
BUDGETS = (
    Budget("smoke", {**_COMMON, "width": 0.0625, "steps": 3, "batch_size": 4, "optimizer": "adam", "lr": 1e-3,
                     "schedule": "constant", "weight_decay": 0.0, "dropout": 0.0, "eval_every": 2, "val_size": 8,
                     "test_size": 16, "eval_batch": 8, "train_size": 64,
                     "speed": [{"width": 0.0625, "batch": 2}], "speed_s": 0.05, "speed_reps": 2}),
    Budget("cpu-2.5k", {**_COMMON, "width": 0.25, "steps": 2500, "batch_size": 32, "optimizer": "adam", "lr": 1e-3,
                        "schedule": "cosine", "weight_decay": 0.0, "dropout": 0.1, "eval_every": 250,
                        "val_size": 1000, "train_size": 80_000,
                        "speed": [{"width": 0.25, "batch": 32}, {"width": 1.0, "batch": 16}], "speed_s": 6.0,
                        "speed_reps": 5}),
    Budget("cpu-2k", {**_COMMON, "width": 0.25, "steps": 2000, "batch_size": 32, "optimizer": "adam", "lr": 1e-3,
                      "schedule": "cosine", "weight_decay": 0.0, "dropout": 0.1, "batch_norm": True,
                      "proxy": {"max_length": 3, "shift": 0.2}, "eval_every": 250, "val_size": 1000,
                      "speed": [{"width": 0.25, "batch": 32}, {"width": 1.0, "batch": 16}], "speed_s": 6.0,
                      "speed_reps": 5}),
    Budget("paper", {**_COMMON, "width": 1.0, "steps": 400_000, "batch_size": 128, "optimizer": "sgd", "lr": 0.01,
                     "schedule": "step", "lr_step": 80_000, "weight_decay": 5e-4, "dropout": 0.5,
                     "eval_every": 10_000, "val_size": 5000, "test_size": None, "workers": 8, "image_size": 76,
                     "crop_size": 64, "speed": [{"width": 1.0, "batch": 128}], "speed_s": 20.0, "speed_reps": 10}),
)


def find_svhn(data_dir: str | Path | None) -> Path | None:
    """Return ``data_dir`` when it is an SVHN format-1 folder (``train/`` and ``test/`` with ``digitStruct.mat``).

    Example:
        >>> find_svhn("no/such/folder") is None
        True
    """
    if data_dir is None:
        return None
    root = Path(data_dir)
    return root if all((root / s / "digitStruct.mat").is_file() for s in ("train", "test")) else None


class SequenceData:
    """Train, validation and test sequences of one run: real SVHN or the MNIST proxy.

    Attributes:
        name: ``"svhn"`` or ``"proxy"``.
        train, val, test: datasets of ``(image, length, digits)``; ``train`` is indexed by :meth:`batches`.
        in_channels, input_size: the images' C and S.
        source: the folder read.
    """

    def __init__(self, name: str, train: Any, val: Any, test: Any, in_channels: int, input_size: int,
                 source: str) -> None:
        self.name, self.train, self.val, self.test = name, train, val, test
        self.in_channels, self.input_size, self.source = in_channels, input_size, source

    def batches(self, seed: int, start: int, steps: int, batch_size: int, workers: int = 0) -> Iterator[tuple]:
        """Yield the training batches ``start .. steps - 1`` of a seed: epoch e's order a permutation of (seed, e)."""
        from torch.utils.data import DataLoader

        from stnkit.data.rng import derive_key

        per_epoch = len(self.train) // batch_size
        if per_epoch < 1:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(self.train)} training sequences")
        step = start
        while step < steps:
            epoch, first = divmod(step, per_epoch)
            g = torch.Generator().manual_seed(derive_key(seed, "svhn-order", epoch) & (2**63 - 1))
            order = torch.randperm(len(self.train), generator=g)[:per_epoch * batch_size].view(per_epoch, batch_size)
            last = min(per_epoch, first + steps - step)
            if hasattr(self.train, "set_epoch"):
                self.train.set_epoch(epoch)  # before the loader copies the dataset into its workers
            loader = DataLoader(self.train, batch_sampler=order[first:last].tolist(), num_workers=workers)
            yield from loader
            step += last - first


def load_data(data_dir: str | None, seed: int, fields: dict[str, Any]) -> SequenceData:
    """Build a run's sequences: real SVHN when ``data_dir`` is a format-1 folder, else the MNIST proxy.

    Proxy: training sequences from MNIST train digits but the last :data:`MNIST_VAL` (a seed's own draw of
    ``train_size`` sequences, default ``steps * batch_size``: none repeated), validation from those last digits,
    test from MNIST test digits (both fixed, seed 0, shared by every model and seed), all with the
    :class:`~stnkit.data.MultiDigitMNIST` options in ``fields["proxy"]`` (default none). SVHN: ``train/`` (plus
    ``extra/`` when present) but the last ``val_size`` sequences of ``train/``, which validate; ``test/`` tests.
    """
    from torch.utils.data import Subset

    root = find_svhn(data_dir)
    if root is not None:
        from stnkit.data import SVHNSequences

        size, crop = fields.get("image_size", 64), fields.get("crop_size")
        kw = {"image_size": size, "crop_size": crop}
        train_all = SVHNSequences(root, "train", random_crop=crop is not None, seed=seed, **kw)
        val_all = SVHNSequences(root, "train", **kw)
        n_val = min(int(fields["val_size"]), len(train_all) // 2)
        parts: list[Any] = [Subset(train_all, range(len(train_all) - n_val))]
        if (root / "extra" / "digitStruct.mat").is_file():
            parts.append(SVHNSequences(root, "extra", random_crop=crop is not None, seed=seed, **kw))
        train = _EpochConcat(parts, [train_all, *parts[1:]]) if len(parts) > 1 else _EpochSubset(parts[0], train_all)
        val = Subset(val_all, range(len(train_all) - n_val, len(train_all)))
        test: Any = SVHNSequences(root, "test", **kw)
        if fields.get("test_size"):
            test = Subset(test, range(min(int(fields["test_size"]), len(test))))
        return SequenceData("svhn", train, val, test, 3, crop or size, str(root))
    from stnkit.data import MultiDigitMNIST, find_mnist

    mnist = find_mnist(data_dir, download=data_dir is None)
    train_x, train_y, test_x, test_y = _mnist(str(mnist))
    n_train = int(fields.get("train_size") or int(fields["steps"]) * int(fields["batch_size"]))
    kw = dict(fields.get("proxy") or {})
    pool = MultiDigitMNIST(train_x[:-MNIST_VAL], train_y[:-MNIST_VAL], n_train, seed=seed, split="train", **kw)
    held = MultiDigitMNIST(train_x[-MNIST_VAL:], train_y[-MNIST_VAL:], int(fields["val_size"]), seed=0, split="val",
                           **kw)
    tests = MultiDigitMNIST(test_x, test_y, int(fields.get("test_size") or len(test_x)), seed=0, split="test", **kw)
    return SequenceData("proxy", pool, held, tests, 1, pool.canvas_size, str(mnist))


@lru_cache(maxsize=1)
def _mnist(root: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from stnkit.data import load_mnist

    return (*load_mnist(root, "train"), *load_mnist(root, "test"))


class _EpochSubset(torch.utils.data.Subset):
    """A Subset passing :meth:`set_epoch` to the dataset whose random crops it holds."""

    def __init__(self, subset: Any, owner: Any) -> None:
        super().__init__(subset.dataset, subset.indices)
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class _EpochConcat(torch.utils.data.ConcatDataset):
    """A ConcatDataset passing :meth:`set_epoch` to its SVHN parts."""

    def __init__(self, parts: list[Any], owners: list[Any]) -> None:
        super().__init__(parts)
        self.owners = owners

    def set_epoch(self, epoch: int) -> None:
        for owner in self.owners:
            owner.set_epoch(epoch)


def evaluate(model: torch.nn.Module, dataset: Any, batch_size: int = 250, device: str = "cpu",
             workers: int = 0) -> dict[str, float]:
    """Return the sequence error (%), per-digit accuracy (%) and mean loss of a model on a dataset, in eval mode.

    Sequence error: the decoded sequence (:func:`stnkit.losses.decode_sequence`) is wrong in its length or any
    digit; per-digit accuracy: true digits right at their position (:func:`stnkit.losses.digit_accuracy`).
    """
    from torch.utils.data import DataLoader

    from stnkit.losses import digit_accuracy, sequence_accuracy, sequence_loss

    was_training = model.training
    model.eval()
    seq_right = digit_right = digits = loss = n = 0.0
    with torch.no_grad():
        for x, length, target in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
            x, length, target = x.to(device), length.to(device), target.to(device)
            out = model(x)
            b, real = x.shape[0], float(length.sum())
            seq_right += float(sequence_accuracy(out.length, out.digits, length, target)) * b
            digit_right += float(digit_accuracy(out.length, out.digits, length, target)) * real
            loss += float(sequence_loss(out.length, out.digits, length, target, reduction="sum"))
            digits, n = digits + real, n + b
    model.train(was_training)
    return {"seq_error": 100.0 * (1.0 - seq_right / n), "digit_acc": 100.0 * digit_right / max(digits, 1.0),
            "loss": loss / n, "n": int(n)}


def _build(fields: dict[str, Any], data: SequenceData) -> torch.nn.Module:
    from stnkit.models import create

    kw: dict[str, Any] = {"input_size": data.input_size, "in_channels": data.in_channels, "width": fields["width"],
                          "dropout": fields["dropout"]}
    if fields.get("batch_norm"):
        kw["batch_norm"] = True
    if fields["model"] != "svhn-cnn":
        kw["loc_lr_scale"] = fields["loc_lr_scale"]
    return create(fields["model"], **kw)


def _optimizer(model: torch.nn.Module, f: dict[str, Any]) -> tuple[torch.optim.Optimizer, Any]:
    from stnkit.modules import param_groups

    groups = param_groups(model, lr=f["lr"], weight_decay=f["weight_decay"])
    if f["optimizer"] == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, momentum=f["momentum"])
    elif f["optimizer"] == "adam":
        opt = torch.optim.Adam(groups)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam'; got {f['optimizer']!r}")
    steps = int(f["steps"])
    schedules = {
        "constant": lambda s: 1.0,
        "cosine": lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps)),
        "step": lambda s: f["lr_gamma"] ** (s // int(f.get("lr_step") or steps)),
    }
    if f["schedule"] not in schedules:
        raise ValueError(f"schedule must be one of {', '.join(schedules)}; got {f['schedule']!r}")
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedules[f["schedule"]])


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto"
                                                                                      else name))


def train_seed(run: SeedRun) -> dict[str, Any]:
    """Train and test one seed of a cell; resumes from ``run_dir/checkpoints/last.pt``; ``metrics.json`` when done.

    ``run.fields``: ``model``, ``width``, ``dropout``, ``loc_lr_scale``, ``optimizer`` (``"sgd"`` with
    ``momentum`` or ``"adam"``), ``lr``, ``schedule`` (``"constant"``, ``"cosine"``, ``"step"``: times
    ``lr_gamma`` every ``lr_step``), ``weight_decay``, ``steps``, ``batch_size``, ``eval_every`` (validation and
    checkpoint), ``train_size`` (proxy; default ``steps * batch_size``), ``val_size``, ``test_size``,
    ``eval_batch``, ``workers``, ``device`` (``"auto"``: CUDA when present), optional ``threads`` and, for SVHN,
    ``image_size``/``crop_size``.

    Raises:
        ValueError: ``run.out`` holds results on the other dataset, or the loss became non-finite.
    """
    from stnkit.files import atomic_torch_save, atomic_write_json

    done = run.run_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    f = run.fields
    if f.get("threads"):
        torch.set_num_threads(int(f["threads"]))
    data = load_data(run.data_dir, run.seed, f)
    _claim_dataset(run.out, data)
    device = _device(f.get("device", "auto"))
    torch.manual_seed(run.seed)
    model = _build(f, data).to(device)
    opt, sched = _optimizer(model, f)
    ckpt = run.run_dir / "checkpoints" / "last.pt"
    start, history, train_s = 0, [], 0.0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, history, train_s = state["step"], state["history"], state["train_s"]
        torch.set_rng_state(state["rng"])
    from stnkit.losses import sequence_loss

    steps, every, t0, wall0 = int(f["steps"]), int(f["eval_every"]), time.time(), time.time()
    model.train()
    running = []
    for step, (x, length, digits) in enumerate(data.batches(run.seed, start, steps, int(f["batch_size"]),
                                                            int(f["workers"])), start + 1):
        x, length, digits = x.to(device), length.to(device), digits.to(device)
        out = model(x)
        loss = sequence_loss(out.length, out.digits, length, digits)
        if not torch.isfinite(loss):
            raise ValueError(f"training stopped: non-finite loss ({loss.item()}) at step {step} of {run.cell.key} "
                             f"seed {run.seed}; the last good checkpoint is {ckpt}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % every == 0 or step == steps:
            val = evaluate(model, data.val, int(f["eval_batch"]), str(device), int(f["workers"]))
            train_s += time.time() - t0
            history.append({"step": step, "train_loss": statistics.fmean(running), **val})
            print(f"{run.cell.key} s{run.seed} step {step}/{steps}: train loss {history[-1]['train_loss']:.3f}, "
                  f"val sequence error {val['seq_error']:.2f} %, {train_s:.0f} s", flush=True)
            running = []
            atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                               "step": step, "history": history, "train_s": train_s, "rng": torch.get_rng_state()},
                              ckpt)
            t0 = time.time()
    test = evaluate(model, data.test, int(f["eval_batch"]), str(device), int(f["workers"]))
    result = {"model": f["model"], "dataset": data.name, "source": data.source, "steps": steps,
              "batch_size": int(f["batch_size"]), "params": sum(p.numel() for p in model.parameters()),
              "test_seq_error": test["seq_error"], "test_digit_acc": test["digit_acc"], "test_n": test["n"],
              "history": history, "train_s": round(train_s, 1), "wall_s": round(time.time() - wall0, 1),
              "device": str(device), "input": [data.in_channels, data.input_size, data.input_size],
              "fields": {k: v for k, v in f.items() if k not in ("speed",)}}
    atomic_write_json(done, result)
    return result


def _claim_dataset(out: Path, data: SequenceData) -> None:
    marker = out / "dataset.json"
    if marker.exists():
        recorded = json.loads(marker.read_text())["dataset"]
        if recorded != data.name:
            raise ValueError(f"{out} holds results on the {recorded!r} data; --data-dir now gives {data.name!r} "
                             f"({data.source}); use another --out")
    else:
        atomic_write_text(marker, json.dumps({"dataset": data.name, "source": data.source}) + "\n")


def summarize(cell: Cell, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the seeds' test sequence errors and per-digit accuracies; keep the first seed's validation curve."""
    errors = [r["test_seq_error"] for r in seeds]
    first = seeds[0]
    return {"model": first["model"], "dataset": first["dataset"], "error": statistics.fmean(errors),
            "errors": errors, "digit_acc": statistics.fmean(r["test_digit_acc"] for r in seeds),
            "test_n": first["test_n"], "iterations": first["steps"], "batch_size": first["batch_size"],
            "params": first["params"], "train_s": round(sum(r["train_s"] for r in seeds), 1),
            "wall_s": round(sum(r["wall_s"] for r in seeds), 1), "device": first["device"], "input": first["input"],
            "history": first["history"], "paper_128": PAPER[cell.key]["128"]}


def headline(result: dict[str, Any]) -> str:
    """``12.34 % sequence error, 95.1 % digits right (paper 3.6 % on SVHN)``."""
    return (f"{result['error']:.2f} % sequence error, {result['digit_acc']:.1f} % digits right (paper "
            f"{fmt(result.get('paper'), 1)} % on SVHN)")


def _speed_path(out: Path) -> Path:
    return out / "speed.json"


def time_steps(out: Path, budget: Budget, log: Any = print) -> None:
    """Time the three models' training steps side by side (:func:`stnkit.bench.svhn.run_svhn_steps`) once per out.

    On the run's input shape (the dataset recorded by the cells, else the proxy's 1x64x64), at each of the
    budget's ``speed`` settings, on CUDA when present; kept in ``<out>/speed.json``.
    """
    from stnkit.bench.svhn import run_svhn_steps
    from stnkit.bench.timing import machine_info

    f = budget.fields
    marker = out / "dataset.json"
    dataset = json.loads(marker.read_text())["dataset"] if marker.exists() else "proxy"
    path = _speed_path(out)
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("budget") == budget.name and old.get("dataset") == dataset:
            return
    channels, size = (3, f.get("crop_size") or f.get("image_size", 64)) if dataset == "svhn" else (1, 64)
    device = str(_device(f.get("device", "auto")))
    rows = []
    for s in f["speed"]:
        log(f"timing the training steps: width {s['width']}, batch {s['batch']}, {channels}x{size}x{size}, {device}")
        r = run_svhn_steps(s["width"], s["batch"], size, channels, budget_s=f["speed_s"], min_reps=f["speed_reps"],
                           device=device)
        rows.append({"width": r.width, "batch": r.batch, "input": [channels, size, size], "cnn_ms": r.cnn_ms,
                     "st_single_ms": r.st_single_ms, "st_multi_ms": r.st_multi_ms,
                     "multi_vs_cnn": r.multi_vs_cnn, "single_vs_cnn": r.single_vs_cnn})
    info = machine_info()
    atomic_write_text(path, json.dumps({"budget": budget.name, "dataset": dataset, "device": device,
                                        "machine": info.get("cpu"), "torch": info.get("torch"), "rows": rows},
                                       indent=2) + "\n")


def _describe(out: Path, budget: Budget) -> dict[str, Any]:
    path = _speed_path(out)
    speed = json.loads(path.read_text()) if path.exists() else None
    keys = ("width", "steps", "batch_size", "optimizer", "lr", "schedule", "lr_step", "momentum", "weight_decay",
            "dropout", "loc_lr_scale", "val_size", "test_size", "batch_norm", "proxy")
    return {"recipe": {k: budget.fields.get(k) for k in keys}, "speed": speed, "paper_ratio": PAPER_RATIO}


def render_markdown(table: dict[str, Any]) -> str:
    """Render the sequence errors beside the paper's (marked when the data is the proxy) and the step times."""
    r = table["recipe"]
    cells = table["cells"]
    by_key = {c["key"]: c for c in cells}
    proxy = any(c.get("dataset") == "proxy" for c in cells) or not cells
    opts = r.get("proxy") or {}
    shift = float(opts.get("shift", 1.0))
    where = ("anywhere on the canvas" if shift == 1.0 else "centred" if shift == 0.0
             else f"moved over +-{shift:g} of the free room")
    data = (f"the **multi-digit MNIST proxy** (1-{opts.get('max_length', 5)} MNIST digits in a row on a 64x64 "
            f"canvas, {where}, scale 0.6-1, rotation +-15 deg, spacing and jitter, 4 clutter crops; "
            "`stnkit.data.MultiDigitMNIST`)" if proxy else
            "**SVHN** (format 1, the union box enlarged by 30 %, resized; sequences of up to 5 digits)")
    schedule = {"constant": "constant", "cosine": "cosine decay",
                "step": f"divided by 10 every {r.get('lr_step')} steps"}.get(r["schedule"], r["schedule"])
    lines = [
        "# Multi-digit SVHN reproduction (Sec. 4.2): CNN vs ST-CNN Single vs ST-CNN Multi\n",
        f"Budget **{table['budget']}**: {r['steps']} steps of batch {r['batch_size']}, {r['optimizer']} lr "
        f"{r['lr']} ({schedule}"
        + (f", momentum {r['momentum']}" if r["optimizer"] == "sgd" else "")
        + f"), weight decay {r['weight_decay']}, dropout {r['dropout']}, localisation lr x{r['loc_lr_scale']}, "
        f"width x{r['width']} of the paper's networks"
        + (" with BatchNorm after every conv and hidden FC layer (not in the paper; the short CPU run's)"
           if r.get("batch_norm") else "") + f". Data: {data}. Metrics on the held-out test set: sequence "
        "error (the decoded sequence's length or any digit wrong) and per-digit accuracy (true digits right at "
        "their position).\n",
    ]
    paper_head = ("paper seq. error % (SVHN 64px; **a different dataset**)" if proxy
                  else "paper seq. error % (SVHN 64px)")
    rows = []
    for c in CELLS:
        res = by_key.get(c.key)
        rows.append([c.label, f"**{fmt(res['error'])}**" if res else "not run",
                     fmt(res["digit_acc"], 1) if res else "—", fmt(c.paper, 1), fmt(PAPER[c.key]["128"], 1),
                     f"{res['params']:,}" if res else "—", f"{res['train_s'] / 60:.1f} min" if res else "—"])
    lines.append(markdown_table(["model", "test seq. error %", "per-digit acc. %", paper_head,
                                 "paper 128px %", "params", "training"], rows))
    lines.append(f"Paper: previous best {PAPER_PREVIOUS_BEST['64']} % (64px) / {PAPER_PREVIOUS_BEST['128']} % "
                 "(128px); the 128px column is the paper's looser crop, not run here."
                 + (" The paper's numbers are SVHN's; ours are the proxy's, so only the ordering of the models can "
                    "be compared." if proxy else "") + "\n")
    speed = table.get("speed")
    if speed:
        rows = [[f"x{s['width']}", str(s["batch"]), "x".join(map(str, s["input"])), f"{s['cnn_ms']:.1f}",
                 f"{s['st_single_ms']:.1f}", f"{s['st_multi_ms']:.1f}", f"**{s['multi_vs_cnn']:.2f}x**",
                 f"{table['paper_ratio']:.2f}x"] for s in speed["rows"]]
        lines.append(f"Training step (forward, sequence loss, backward, SGD step; dropout on), the three models timed "
                     f"side by side in interleaved rounds on one input, {speed['device']} ({speed.get('machine')}; "
                     "`stnkit.bench.svhn`); median ms per step:\n")
        lines.append(markdown_table(["width", "batch", "input", "CNN", "ST-CNN Single", "ST-CNN Multi",
                                     "Multi / CNN", "paper Multi / CNN (GPU)"], rows))
    lines.append(f"Cells finished: {len(by_key)} of {len(CELLS)}. Figure: `fig_svhn.png` (test inputs with each "
                 "transformer's attended region in input pixels; ST-CNN Multi's deeper regions composed through "
                 "the earlier transformers' frames).\n")
    return "\n".join(lines)


def _model_of(out: Path, key: str, data: SequenceData) -> torch.nn.Module | None:
    run_dir = out / "cells" / key / "s0"
    ckpt, metrics = run_dir / "checkpoints" / "last.pt", run_dir / "metrics.json"
    if not (ckpt.exists() and metrics.exists()):
        return None
    fields = json.loads(metrics.read_text())["fields"]
    model = _build(fields, data)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
    return model.eval()


def region_rows(models: list[tuple[str, torch.nn.Module]], images: Tensor) -> list[list[Any]]:
    """Panels: per model a row of inputs with each transformer's attended region, and for one transformer its output.

    Args:
        models: ``(row label, SequenceNet with transformers)``.
        images: inputs (N, C, S, S).

    Returns:
        Rows of :class:`stnkit.viz.Panel` for :func:`stnkit.viz.panel_figure`.
    """
    from stnkit.losses import decode_sequence
    from stnkit.models.svhn import SequenceNet, region_corners
    from stnkit.viz import Panel, region_panels

    rows: list[list[Any]] = []
    for label, model in models:
        net = cast(SequenceNet, model).eval()
        with torch.no_grad():
            frames = net.attended_regions(images)  # per transformer (N, 3, 3) input_from_output
            out = net(images)
            length, digits = decode_sequence(out.length, out.digits)
        regions = [region_corners(m, images.shape[-2:]) for m in frames]  # (N, 4, 2) pixel edges
        titles = ["".join(str(int(d)) for d in digits[i, :int(length[i])]) or "-" for i in range(images.shape[0])]
        panels = region_panels(images, regions, titles=[f"pred {t}" for t in titles])
        rows.append([replace(panels[0], ylabel=label), *panels[1:]])
        if len(frames) == 1:
            st = next(iter(net.transformers.values()))
            with torch.no_grad():
                warped = st(images)  # (N, C, S, S)
            rows.append([Panel(warped[i].clamp(0, 1), ylabel="its output" if i == 0 else "")
                         for i in range(images.shape[0])])
    return rows


def _figures(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None) -> None:
    needed = [k for k in ("st-single", "st-multi") if k in finished]
    if not needed:
        return
    metrics = out / "cells" / needed[0] / "s0" / "metrics.json"
    if not metrics.exists():
        return
    fields = {**json.loads(metrics.read_text())["fields"], "val_size": 8, "test_size": FIGURE_IMAGES, "steps": 1,
              "batch_size": 1}
    data = load_data(data_dir, 0, fields)
    models = [(MODELS[k][1].split(" (")[0], m) for k in needed if (m := _model_of(out, k, data)) is not None]
    if not models:
        return
    from stnkit.viz import panel_figure

    images = torch.stack([data.test[i][0] for i in range(min(FIGURE_IMAGES, len(data.test)))])
    title = ("Attended regions in input pixels (ST-CNN Multi: transformers 1-4, red, orange, green, blue)"
             + ("; multi-digit MNIST proxy" if data.name == "proxy" else "; SVHN"))
    panel_figure(region_rows(models, images), title).savefig(out / "fig_svhn.png", dpi=90)


EXPERIMENT = Experiment(
    name=NAME, title="Sec. 4.2: multi-digit SVHN (or its MNIST proxy), CNN vs ST-CNN Single/Multi, step times",
    cells=CELLS, budgets=BUDGETS, default_budget="cpu-2k", render=render_markdown, run_seed=train_seed,
    summarize=summarize, headline=headline, describe=_describe, after_cells=time_steps, figures=_figures,
)
