"""jaxdet: object detectors as pure JAX functions, trained by backpropagation.

Importing the package registers the embedded TFDS dataset `jaxdet_shapes`.
"""

from jaxdet.data import shapes as _shapes  # noqa: F401  (registers `jaxdet_shapes` with TFDS)

__version__ = "0.1.0"
