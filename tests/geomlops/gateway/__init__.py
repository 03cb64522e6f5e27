"""Tests of the gateway (a package, so its modules share helpers from conftest)."""
