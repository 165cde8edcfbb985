from __future__ import annotations

import hypothesis

import trioscope._supervisor

# Backoff jitter draws from this source; registering it lets Hypothesis seed it
# and replay failures exactly.
hypothesis.register_random(trioscope._supervisor.JITTER_RANDOM)

hypothesis.settings.register_profile("trioscope", deadline=None, max_examples=50, print_blob=True)
hypothesis.settings.load_profile("trioscope")
