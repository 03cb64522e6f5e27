"""__NAME__: a geomlops model package."""
