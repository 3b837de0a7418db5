"""Classify new clips with a trained checkpoint (``python -m behavior.predict``).

    batch.py        the command: find the clips, classify them in batches, one row each
    predictions.py  the predictions file: columns, appending, resuming, provenance, reading it back
    timeline.py     window mode for long videos: a label per window, merged into a timeline per video
"""
