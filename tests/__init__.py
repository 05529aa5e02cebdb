"""The test suite, a package: support code is imported as ``tests.support.<module>``."""

import pytest

# Plain ``assert`` in the support modules (run_curl_sequence, ...) reports its operands too.
pytest.register_assert_rewrite("tests.support")
