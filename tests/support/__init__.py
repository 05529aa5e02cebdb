"""Helpers for the tests: servers, the OIDC provider, synthetic images, test apps."""
