"""jaxdet: object detectors as pure JAX functions, trained by backpropagation.

The package itself imports no TensorFlow: the model, loss and step code runs where only
JAX is installed (e.g. a GPU benchmark). `jaxdet.data.pipeline` registers the embedded
TFDS dataset `jaxdet_shapes` when imported.
"""

__version__ = "0.1.0"
