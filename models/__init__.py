"""Model runtimes: every model format faceaudit runs, behind one interface, and what runs them over a dataset.

``loading.load_runtime`` opens a ``.keras``/``.h5`` file, a SavedModel folder, a ``.tflite`` or an ``.onnx`` file as a
``runtime.Runtime`` (one module per format: ``keras_runtime``, ``savedmodel_runtime``, ``tflite_runtime``,
``onnx_runtime``; ``preprocessing`` and ``formats`` beside them; ``introspection`` reads a file without a contract).
``opening.open_model`` resolves a run folder or model file and its label schema once, ``inference`` runs it over a
manifest, ``batch`` writes Parquet shards (locally or on Ray), ``export`` writes SavedModel, TFLite and ONNX copies.
``layers`` holds the custom Keras objects faceaudit's saved models contain, ``dlib_features`` dlib's face descriptors
and ``ensemble`` runs an ensemble's members and combiner. The package sits on the core and datasets layers and below
training and the audit (see :mod:`faceaudit.architecture`); imports are lazy, so importing it stays light.
"""
