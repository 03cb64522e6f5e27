"""A nearest-centroid pixel classifier that needs numpy < 2 and an MLflow 2 client."""
