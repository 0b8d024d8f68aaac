"""The benchmark figures that are not pytest-benchmark timings (requests/s, ratios), kept in
measurement order for the summary that tests/bench/conftest.py prints at the end of the run."""

FIGURES = []    # (section, name, values dict)


def record(section, name, **values):
    """Keep a figure for the summary (and for the JSON file named by FAAS_BENCH_JSON)."""
    FIGURES.append((section, name, values))
