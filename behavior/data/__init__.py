"""Data stages: clip records, scanning, splits, sampling, transforms, datasets, the synthetic set."""
