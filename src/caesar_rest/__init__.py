"""caesar-rest: a web service for astronomical source extraction and classification."""

__version__ = "0.1.0"
