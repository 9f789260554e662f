"""pvtt: training data for product video template transfer.

The package is split in four parts whose imports run one way:
``pvtt.tools`` -> ``pvtt.builder`` and ``pvtt.loaders`` -> ``pvtt.schemas``.
A training job imports only ``pvtt.loaders`` (and through it ``pvtt.schemas``).
"""

__version__ = "0.1.0"
