"""A LightGBM pixel classifier (a framework geomlops does not install)."""
