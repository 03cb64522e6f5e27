"""The Argo engine: the local runner, lint and submit.

Knows Argo Workflows manifests and nothing of geomlops' domain: a rule it needs (who may
approve a gate, where a ``templateRef`` points) is passed in by the caller.
"""
