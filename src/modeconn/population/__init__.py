"""The members: loading them safely, knowing them by their weights, and training them.

:mod:`~modeconn.population.members` (:class:`Population`, sidecars, duplicates),
:mod:`~modeconn.population.weights` (safetensors / ``weights_only`` loading, SHA-256,
shape checks), :mod:`~modeconn.population.train` (text recipes: fine-tuning, LP-FT,
checkpoints) and :mod:`~modeconn.population.train_vision` (the image recipe).
"""
