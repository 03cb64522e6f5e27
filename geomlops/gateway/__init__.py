"""The gateway: one authenticated REST API (``/api/v1``) over the catalogue, runs and serving.

``geomlops gateway serve`` starts it. Runs go to a :class:`~geomlops.gateway.backends.base.RunBackend`
(the local runner, or Argo Server in a cluster); callers authenticate with API keys or OIDC
bearer tokens and act within their role; every write is audited in the gateway's database.
Only the CLI imports this package.
"""
