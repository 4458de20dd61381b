"""Classification metrics of a trained classifier, by scikit-learn (imported inside, so importing is cheap).

:func:`compute_metrics`: accuracy, macro-F1, micro-F1, per-class precision/recall/F1/support and the
confusion matrix. Macro-F1 averages the per-class F1 over the classes that occur in the true labels or in
the predictions (scikit-learn's default label set); an undefined precision or recall counts as 0
(``zero_division=0``). Multiclass accuracy is the share of exact predictions (micro-F1 equals it);
multilabel accuracy is the exact-match (subset) accuracy. The confusion matrix has the classes in the given
order, true labels in rows; for multilabel it is one 2x2 matrix ``[[tn, fp], [fn, tp]]`` per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Label = str | list[str]


def compute_metrics(y_true: Sequence[Label], y_pred: Sequence[Label], classes: Sequence[str],
                    multilabel: bool = False) -> dict[str, Any]:
    """Accuracy, macro-/micro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        multilabel_confusion_matrix,
        precision_recall_fscore_support,
    )
    from sklearn.preprocessing import MultiLabelBinarizer

    classes = list(classes)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    n = len(y_true)
    if multilabel:
        mlb = MultiLabelBinarizer(classes=classes)
        t, p = mlb.fit_transform(y_true), mlb.transform(y_pred)
        present = np.flatnonzero(t.any(axis=0) | p.any(axis=0)).tolist() if n else []
        confusion: dict[str, Any] = {"labels": classes, "per_class": (
            multilabel_confusion_matrix(t, p).tolist() if n else [[[0, 0], [0, 0]] for _ in classes])}
    else:
        t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
        present = sorted(set(y_true) | set(y_pred))
        confusion = {"labels": classes, "matrix": (confusion_matrix(t, p, labels=classes).tolist() if n
                                                  else [[0] * len(classes) for _ in classes])}
    if not n:
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {"accuracy": 0.0, "macro_f1": 0.0, "micro_f1": 0.0, "per_class": {c: dict(zero) for c in classes},
                "confusion": confusion, "n": 0}
    per_labels = list(range(len(classes))) if multilabel else classes
    precision, recall, f1, support = precision_recall_fscore_support(t, p, labels=per_labels, zero_division=0)
    macro = f1_score(t, p, labels=present, average="macro", zero_division=0) if present else 0.0
    return {
        "accuracy": float(accuracy_score(t, p)),
        "macro_f1": float(macro),
        "micro_f1": float(f1_score(t, p, average="micro", zero_division=0)),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": confusion,
        "n": n,
    }
