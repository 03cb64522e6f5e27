"""geomlops: the ML lifecycle of a humanitarian geospatial platform, as workflows-as-code."""

__version__ = "0.2.0"
