"""Every use of a third-party library's private internals, in one place, each with the versions it was checked on.

faceaudit otherwise uses public APIs only. Each function here names the private attribute it reaches for, why no
public API does the job, and what happens when a release drops it. :data:`CHECKED` says which versions every one
was checked on (``tests/test_compat.py`` runs each against the installed libraries); pyproject.toml bounds Keras
below 4 because most of them are Keras 3 internals. Imports are lazy: importing this module loads neither Keras
nor seaborn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: Library -> the versions whose internals every function below was checked on (tensorflow-cpu 2.21.0 beside Keras).
CHECKED: dict[str, tuple[str, ...]] = {
    "keras": ("3.15.1",),
    "seaborn": ("0.13.2",),
}


# -- Keras 3 ----------------------------------------------------------------------------------------------------


def all_layers(model, *, include_self: bool = False) -> list:
    """Every layer of ``model``, nested ones included (a backbone model inside the classifier, its blocks).

    Uses ``Layer._flatten_layers(include_self=, recursive=True)`` (Keras 3.0-3.15): it also finds layers tracked
    inside custom layers, which the public ``model.layers`` does not list. Without it, the public ``layers`` of
    each nested model are walked instead."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=include_self, recursive=True))
    found, stack = [], [model]
    while stack:
        layer = stack.pop(0)
        if layer is not model or include_self:
            found.append(layer)
        stack.extend(getattr(layer, "layers", None) or [])
    return found


def seed_generators(layer) -> list:
    """The ``keras.random.SeedGenerator`` objects a layer draws from (a Dropout's masks).

    Keras 3 keeps them in the private ``Layer._seed_generators`` list and does not save their state in ``.keras``
    files; the trainer reseeds them per epoch so a resumed run draws the masks an uninterrupted one would. An empty
    list when a release renames it (resumed runs then differ in their dropout masks, nothing else)."""
    return list(getattr(layer, "_seed_generators", None) or [])


def keras_history(tensor) -> tuple | None:
    """``(layer, node_index, tensor_index)`` of the layer call that produced a symbolic Keras tensor, else None.

    ``KerasTensor._keras_history`` (Keras 2 and 3) is the only record of which layer made a functional model's
    output; faceaudit names outputs and finds the layer before the classifier with it."""
    history = getattr(tensor, "_keras_history", None)
    return tuple(history) if history is not None else None


def node_inputs(layer, node_index: int) -> list:
    """The input tensors of one call (node) of a layer in a functional graph: ``layer._inbound_nodes[i]``
    (Keras 3.0-3.15), the graph walk behind :func:`keras_history`."""
    return list(layer._inbound_nodes[node_index].input_tensors)


def multiworker_steps(model, element_spec) -> None:
    """Work around two Keras 3 (seen through 3.15) MultiWorkerMirroredStrategy failures in ``fit``, on this model.

    Keras builds the metrics, loss and optimizer by ``strategy.reduce``-ing a whole (x, y) batch, a nest that the
    strategy's reduce rejects ("unsupported type PerReplica"); the build is symbolic and needs only the shapes and
    dtypes, which every worker knows from its own dataset, so the private ``Model._maybe_symbolic_build`` is
    replaced by ``Model._symbolic_build(data_batch=element_spec)``. And Keras reduces each step's scalar logs across
    workers along axis 0 ("Invalid reduction dimension 0"), so the steps (public ``train_step``/``test_step``)
    return them with shape [1]. The epoch logs (the history) do not come from the step logs: Keras reads them from
    the metric variables, summed over every replica of every worker, so they are the same on every worker.
    """
    import tensorflow as tf

    cls = type(model)

    def build(iterator=None, data_batch=None):
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=element_spec)

    def rank_one(logs):
        return {k: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v for k, v in logs.items()}

    model._maybe_symbolic_build = build
    model.train_step = lambda data: rank_one(cls.train_step(model, data))
    model.test_step = lambda data: rank_one(cls.test_step(model, data))


# -- seaborn ----------------------------------------------------------------------------------------------------


@contextmanager
def seaborn_heatmaps_without_redraws() -> Iterator[None]:
    """Skip the full-figure redraw ``seaborn.heatmap`` does after every panel (to test tick-label overlap).

    Patches the private ``seaborn.matrix._draw_figure`` (seaborn 0.12-0.13) with a no-op while inside; faceaudit's
    heatmaps set their tick labels explicitly and draw once, when saving (5 panels: ~6 s -> ~1 s). When a release
    drops the function nothing is patched and heatmaps are only slower."""
    import seaborn.matrix as matrix

    original = getattr(matrix, "_draw_figure", None)
    if original is not None:
        matrix._draw_figure = lambda fig: None
    try:
        yield
    finally:
        if original is not None:
            matrix._draw_figure = original
