"""One module per suite, each with ``run(ctx) -> list[Figure]``; listed in harness.SUITES."""
