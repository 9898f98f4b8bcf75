"""segrobust: robustness benchmark for 3D brain-tumour segmentation networks."""

__version__ = "0.1.0"
