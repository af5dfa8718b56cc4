"""Job graphs: score, aggregate, demo and validation suites."""
