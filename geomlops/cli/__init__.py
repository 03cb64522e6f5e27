"""The ``geomlops`` command line: the only layer that may import every other."""
