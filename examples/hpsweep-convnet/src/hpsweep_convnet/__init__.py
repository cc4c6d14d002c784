"""hpsweep's example plug-in model: a small convolutional net in the CS231n assignment style.

Registered as ``convnet`` (see pyproject.toml); only NumPy is needed, not hpsweep.
"""

from hpsweep_convnet.convnet import ConvNet

__all__ = ["ConvNet"]
