"""Live mode: classify a camera, stream or file as it plays.

    worker.py    the classifier thread: ring-buffer windows in, predictions and attention maps out
    annotate.py  label, score, region box and attention heatmap drawn onto frames
    display.py   the optional window
    session.py   the reading loop that ties them together (``run``)
    speed.py     the benchmark (``python -m behavior.live.speed``)
"""
