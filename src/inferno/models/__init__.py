"""Models: ``Model``, ``Signature``, the loaders by source and the bundled zoo.

Every model, whatever it was trained with, arrives here as an ONNX graph plus a ``Signature``
and a ``Task``; the layers above see nothing else.
"""
