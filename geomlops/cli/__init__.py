"""The ``geomlops`` command line: the only layer that may import every other.

``main`` holds the group and the workflow commands (render, lint, run, runs, submit, install,
demo); ``catalog``, ``dev``, ``promote``, ``serve`` and ``vectorize`` hold their command groups;
``demo`` and ``install`` hold the logic behind those two commands; ``_tools`` the shared error
handling.
"""
