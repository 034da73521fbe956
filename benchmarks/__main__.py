"""``python -m benchmarks REQUEST``: one suite in its own interpreter, as ``dltr bench`` starts it when it runs
several (``benchmarks.harness.run_suite_request``). A module apart from the harness, so that running it does not
import the harness twice (``python -m benchmarks.harness`` warned that the package had imported it already)."""

import sys

from benchmarks.harness import run_suite_request

run_suite_request(sys.argv[1])
