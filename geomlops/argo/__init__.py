"""The Argo engine: the local runner, lint, submit, and the DAG checker they share (``dag``).

Knows Argo Workflows manifests and no rule of geomlops' domain: a rule it needs (what is a
valid approver, where a ``templateRef`` points) is passed in by the caller.
"""
