"""Real labelled data sets (JSONL, CSV or Parquet with a text and a label column), read through DuckDB."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from factory.spec import DatasetRef, Spec

READERS = {".jsonl": "read_json_auto", ".json": "read_json_auto", ".ndjson": "read_json_auto",
           ".csv": "read_csv_auto", ".tsv": "read_csv_auto", ".parquet": "read_parquet"}


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str


def read_labelled(path: Path, text_field: str = "text", label_field: str = "label",
                  limit: int | None = None) -> list[LabelledText]:
    """Rows of a labelled file, in file order (``limit`` keeps the first rows)."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unsupported format {path.suffix!r} (use .jsonl, .csv or .parquet)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    con = duckdb.connect()
    try:
        sql = (f'SELECT CAST("{text_field}" AS VARCHAR), CAST("{label_field}" AS VARCHAR) FROM {reader}(?)'
               + (f" LIMIT {int(limit)}" if limit else ""))
        rows = con.execute(sql, [str(path)]).fetchall()
    except duckdb.BinderException as exc:
        raise ValueError(f"{path}: needs columns {text_field!r} and {label_field!r}: {exc}") from None
    finally:
        con.close()
    return [LabelledText(t, l) for t, l in rows if t is not None and l is not None]


def read_ref(spec: Spec, ref: DatasetRef, limit: int | None = None) -> list[LabelledText]:
    return read_labelled(spec.resolve_path(ref.path), ref.text_field, ref.label_field, limit)
