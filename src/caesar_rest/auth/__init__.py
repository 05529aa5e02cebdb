"""Authentication (OIDC bearer tokens) and the caller's identity."""
