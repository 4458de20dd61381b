"""A stand-in for ``python -m factory.training.job`` (same CLI and Pipes contract) for the cluster tier.

Used only until factory/training/job.py exists in the image. It trains a TF-IDF + logistic-regression
classifier on the samples, evaluates it on the test set, writes --out and, when launched through
Dagster Pipes, reports logs and one materialization whose metadata holds macro_f1, accuracy, ...
A failure exits non-zero with its error on stderr. Runs from the data volume:
``python /data/standin_train.py --spec ... --samples ... --test-set ... --out ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="standin_train")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--trainer", default="linear_probe")
    args = parser.parse_args(argv)

    if os.environ.get("DAGSTER_PIPES_CONTEXT"):  # launched by a Dagster Pipes client
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            return _run(args, pipes)
    return _run(args, None)


def _run(args: argparse.Namespace, pipes: Any) -> int:
    import pyarrow.parquet as pq
    import yaml
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    log = pipes.log.info if pipes else (lambda msg: print(msg, file=sys.stderr))
    spec = yaml.safe_load(Path(args.spec).read_text())
    table = pq.read_table(args.samples).to_pydict()
    texts, labels = table["text"], table["label"]
    classes = [c if isinstance(c, str) else c["name"] for c in spec["classes"]]
    missing = sorted(set(classes) - set(labels))
    if missing:
        raise ValueError(f"no samples for classes {missing} in {args.samples}")
    test = [json.loads(line) for line in Path(args.test_set).read_text().splitlines() if line.strip()]
    log(f"training {args.trainer} (stand-in) on {len(texts)} samples, testing on {len(test)}")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1)
    model = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform(texts), labels)
    predicted = model.predict(vectorizer.transform([r["text"] for r in test]))
    gold = [r["label"] for r in test]
    result = {
        "spec": spec["name"], "trainer": args.trainer, "n_train": len(texts), "n_test": len(test),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro")),
        "micro_f1": float(f1_score(gold, predicted, average="micro")),
        "stand_in": True,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    log(f"macro_f1={result['macro_f1']:.3f} accuracy={result['accuracy']:.3f} -> {args.out}")
    if pipes:
        pipes.report_asset_materialization(metadata={k: v for k, v in result.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
