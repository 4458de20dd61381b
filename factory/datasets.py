"""Real labelled data files (JSONL, CSV/TSV or Parquet with a text and a label column): the one reader
that few-shot examples, the quality stage and the train/eval job all use."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.spec import DatasetRef, Spec


class DataFileError(ValueError):
    """A data file that exists but cannot be read as labelled rows (format, JSON, columns)."""


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL, CSV/TSV or Parquet file as dicts (values as stored: lists stay lists)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if suffix in (".jsonl", ".ndjson", ".json"):
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            return list(json.loads(text))
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"{path}:{n}: not a JSON object: {exc}") from None
        return rows
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise DataFileError(f"{path}: unsupported format {path.suffix!r} (use .jsonl, .csv or .parquet)")


def read_labelled(path: Path, text_field: str = "text", label_field: str = "label",
                  limit: int | None = None) -> list[LabelledText]:
    """Rows of a labelled file, in file order (``limit`` keeps the first rows)."""
    rows = read_rows(path)
    if rows and (text_field not in rows[0] or label_field not in rows[0]):
        raise DataFileError(f"{path}: needs columns {text_field!r} and {label_field!r} (found {sorted(rows[0])})")
    out = [LabelledText(str(r[text_field]), str(r[label_field])) for r in rows
           if r.get(text_field) is not None and r.get(label_field) is not None]
    return out[:limit] if limit else out


def read_ref(spec: Spec, ref: DatasetRef, limit: int | None = None) -> list[LabelledText]:
    return read_labelled(spec.resolve_path(ref.path), ref.text_field, ref.label_field, limit)
