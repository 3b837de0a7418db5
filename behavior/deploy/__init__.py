"""Deployment: a trained model as one file that classifies on its own, and the runtime that loads it.

    bundle.py     the record an export carries (recipe, class names, source checkpoint) and reading it back
    exporters.py  ONNX (torch's dynamo exporter) and torch.export (.pt2), dynamic batch and frames
    runtime.py    load_any_model: a .pt checkpoint, an .onnx (ONNX Runtime) or a .pt2, behind one module interface

The command is ``python -m behavior.export`` (behavior/export.py); predict and live take an export as checkpoint=.
"""
