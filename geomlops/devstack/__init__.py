"""The local service stack (``geomlops dev``): S3, MLflow on PostgreSQL, the STAC API.

:mod:`geomlops.devstack.stack` starts and stops it, :mod:`geomlops.devstack.services` says
what each service is, :mod:`geomlops.devstack.processes` is the one process manager and
:mod:`geomlops.devstack.s3store` keeps the S3 store's objects across restarts.
"""
