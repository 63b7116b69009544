"""
Stateful fuzzing of the SMTP/LMTP protocol with hypothesis.

Two settings profiles, chosen with the environment variable
C{HYPOTHESIS_PROFILE}:

  - C{ci} (the default): a bounded, derandomized, database-less run, so that
    C{trial tests} takes well under a minute and a failure reproduces on every
    machine;
  - C{long}: many more examples, random seeds, for a soak on a workstation::

        HYPOTHESIS_PROFILE=long trial tests.fuzz

C{FUZZ_EXAMPLES} overrides the number of examples of either profile, and
C{FUZZ_SEED} sets the seed of a C{long} run (to run one again), C{FUZZ_STEPS}
its steps per session.
"""

from __future__ import annotations

import os

import hypothesis.core
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
    stateful_step_count=int(os.environ.get("FUZZ_STEPS") or 80),
    deadline=None,
    # Explicitly: a profile inherits the default one, which tests/__init__.py
    # derandomizes, and a derandomized run ignores FUZZ_SEED.
    derandomize=False,
    database=None,
    # FUZZ_NOSHRINK: report the first failure as found (a quick rerun).
    phases=[Phase.generate] if os.environ.get("FUZZ_NOSHRINK") else list(Phase),
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

if os.environ.get("FUZZ_SEED"):
    # What pytest's --hypothesis-seed sets; trial has no such option.
    hypothesis.core.global_force_seed = int(os.environ["FUZZ_SEED"])

#: The settings the fuzz tests run with.
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
