"""Hera script templates: each wraps one step with its image, resources, retries and secrets."""
