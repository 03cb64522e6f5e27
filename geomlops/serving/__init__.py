"""Serving a model with its post-processing transformer, in one place.

- :mod:`~geomlops.serving.deploy`: resolve ``MODEL@ALIAS``, render and apply the cluster manifests
  (the promotion workflow's last step);
- :mod:`~geomlops.serving.manifests`: Seldon Core v1 / Core 2 and KServe manifests;
- :mod:`~geomlops.serving.transformer`: the mask → GeoJSON transformer;
- :mod:`~geomlops.serving.predictor_server`: the predictor, a script run by the model's own
  environment (or image) that answers the V2 protocol; it never imports geomlops;
- :mod:`~geomlops.serving.runtime`: the MLServer transformer runtime (chip in, prepared by the
  MLM item, sent to the predictor, its answer read by the MLM item, GeoJSON out);
- :mod:`~geomlops.serving.kserve_transformer`: KServe's transformer container (MLServer before
  the predictor);
- :mod:`~geomlops.serving.chips`: reading one uploaded chip and predicting it as the MLM item says;
- :mod:`~geomlops.serving.local`: ``geomlops serve``: the predictor in the model's environment,
  MLServer in an isolated one (:mod:`~geomlops.serving.isolated_env`).
"""
