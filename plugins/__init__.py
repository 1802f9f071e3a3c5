"""Built-in pretraining methods, one module each, registered through the ``benchharness``
entry-point group exactly as third-party plugins are (see ``pyproject.toml``)."""
