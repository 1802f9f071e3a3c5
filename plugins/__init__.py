"""Built-in plugins, registered through the ``benchharness`` entry-point group exactly as
third-party plugins are (see ``pyproject.toml``).

Each pretraining method is a package of its own, ``plugins/<name>/``: its ``__init__`` holds the
hook implementation and the pretraining, its other modules what only that method uses (sound's
texture statistics and codes, tracking's tracks, colorization's Lab space, context's patches).
The experiment trackers are one module each (``track_*.py``).
"""
