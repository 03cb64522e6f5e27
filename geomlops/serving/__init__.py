"""Serving a model with its post-processing transformer, in one place.

- :mod:`~geomlops.serving.deploy`: resolve ``MODEL@ALIAS``, render and apply the cluster manifests
  (the promotion workflow's last step);
- :mod:`~geomlops.serving.manifests`: Seldon Core v1 / Core 2 and KServe manifests;
- :mod:`~geomlops.serving.transformer`: the mask → GeoJSON transformer;
- :mod:`~geomlops.serving.runtime`: the MLServer runtime (chip in, GeoJSON out);
- :mod:`~geomlops.serving.kserve_transformer`: KServe's transformer container (MLServer before
  the predictor);
- :mod:`~geomlops.serving.chips`: reading and predicting one uploaded chip;
- :mod:`~geomlops.serving.local`: ``geomlops serve`` on MLServer, in an isolated environment
  (:mod:`~geomlops.serving.isolated_env`).
"""
