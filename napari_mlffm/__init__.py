"""napari plugin for MLFFM-SegDiff skin lesion segmentation.

The plugin is a thin layer over the headless packages ``model`` (the
segmenter) and ``training`` (datasets, fine-tuning, I/O).
"""

__version__ = "0.1.0"
