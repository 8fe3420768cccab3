"""What the engine evaluates on: the :class:`~modeconn.data.base.Split` protocol and its kinds.

A split is a fixed, seeded sample prepared once and reused at every parameter point.
Kinds: :mod:`~modeconn.data.text` (sentence pairs), :mod:`~modeconn.data.digits` (real
MNIST digits, the box cue) on :mod:`~modeconn.data.tensors`; plus
:mod:`~modeconn.data.feather`, the published accuracies of the 100 BERTs of a feather.
"""
