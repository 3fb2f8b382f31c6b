"""Serving: the REST API with its limits and workers, the web UI, batch reading on Ray.

May import the reading core, `models`, `data` and `cli`'s input walking; never training or Keras.
"""
