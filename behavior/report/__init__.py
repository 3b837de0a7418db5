"""Report stage: metrics, per-class table, confusion matrix, predictions and training curves."""

from behavior.report.metrics import (
    compute_metrics,
    confusion_counts,
    format_per_class_table,
    looks_like_probabilities,
    per_class_rows,
    summary_line,
    to_probabilities,
    topk_accuracy,
)
from behavior.report.plots import plot_confusion_matrix, plot_curves, row_normalize
from behavior.report.writer import atomic_write_text, write_history, write_report

__all__ = [
    "atomic_write_text",
    "compute_metrics",
    "confusion_counts",
    "format_per_class_table",
    "looks_like_probabilities",
    "per_class_rows",
    "plot_confusion_matrix",
    "plot_curves",
    "row_normalize",
    "summary_line",
    "to_probabilities",
    "topk_accuracy",
    "write_history",
    "write_report",
]
