"""Client defaults and environment variable names (kept light: no HTTP library imported)."""

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "CAESAR_REST_URL"
TOKEN_ENV = "CAESAR_REST_TOKEN"
TOKEN_FILE_ENV = "CAESAR_REST_TOKEN_FILE"
