"""
Tests for twisted-smtpd.

The property tests run with one hypothesis profile: derandomized (a failure
reproduces on every machine), without an example database, and without the
timing checks (input generation and example deadlines), which a loaded
2-core machine trips on without any defect.  The stateful fuzzer in
L{tests.fuzz} has its own profiles.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "twisted-smtpd-tests",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("twisted-smtpd-tests")
