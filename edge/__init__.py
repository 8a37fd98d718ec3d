"""drsn-edge: defect classifiers from training to the production line.

Build side (may import torch): ``edge.data``, ``edge.models``, ``edge.train``.
Gateway side (never imports torch): ``edge.backends``, ``edge.runtime``,
``edge.bundle``, ``firmware_bridge``.
"""

__version__ = "0.1.0"
