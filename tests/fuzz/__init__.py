"""
Stateful fuzzing of the SMTP/LMTP protocol with hypothesis.

Two settings profiles, chosen with the environment variable
C{HYPOTHESIS_PROFILE}:

  - C{ci} (the default): a bounded, derandomized, database-less run, so that
    C{trial tests} takes well under a minute and a failure reproduces on every
    machine;
  - C{long}: many more examples, random seeds, for a soak on a workstation::

        HYPOTHESIS_PROFILE=long trial tests.fuzz

C{FUZZ_EXAMPLES} overrides the number of examples of either profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_EXAMPLES = os.environ.get("FUZZ_EXAMPLES")

settings.register_profile(
    "ci",
    max_examples=int(_EXAMPLES or 200),
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
settings.register_profile(
    "long",
    max_examples=int(_EXAMPLES or 5000),
    stateful_step_count=80,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: The settings the fuzz tests run with.
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
