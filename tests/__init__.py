"""The test suite, a package: support code is imported as ``tests.support.<module>``."""
