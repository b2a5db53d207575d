#!/usr/bin/env python3
"""Medians of repeated bench runs: reads the result lines `herald-demo bench` printed (on
stdin) and prints, per set-up (the label before the first ": "), the median of each figure
over its runs. These machines are noisy: quote medians of runs, not a best run.

Usage: python3 bench/medians.py < results.txt   (bench/run.sh does this when RUNS > 1)
"""
import re
import statistics
import sys
from collections import defaultdict

# What each figure looks like in a result line, and how it is shown.
FIGURES = [
    ("end to end", re.compile(r": (\d+) msg/s end to end"), "{:,.0f} msg/s"),
    ("steady state", re.compile(r"(\d+) msg/s steady state"), "{:,.0f} msg/s"),
    ("CPU a message", re.compile(r"total [\d.]+ s = ([\d.]+) ms per message"), "{:.3f} ms"),
    ("RabbitMQ alone", re.compile(r"RabbitMQ alone: \d+ messages .*: (\d+) msg/s$"), "{:,.0f} msg/s"),
    ("of RabbitMQ alone", re.compile(r": (\d+)% of RabbitMQ alone"), "{:.0f}%"),
]


def medians(lines):
    """{label: {figure: [values in run order]}} from the result lines."""
    runs = defaultdict(lambda: defaultdict(list))
    for line in lines:
        label, sep, rest = line.rstrip("\n").partition(": ")
        if not sep:
            continue
        for name, pattern, _ in FIGURES:
            # The CPU line of the broker's own measurement is not Herald's.
            if name == "CPU a message" and rest.startswith("RabbitMQ alone"):
                continue
            found = pattern.search(": " + rest)
            if found:
                runs[label][name].append(float(found.group(1)))
    return runs


def main():
    runs = medians(sys.stdin)
    if not runs:
        print("no bench results on stdin", file=sys.stderr)
        return 1
    print("== medians of runs")
    for label, figures in runs.items():
        shown = []
        for name, _, form in FIGURES:
            values = figures.get(name)
            if values:
                shown.append(f"{name} {form.format(statistics.median(values))} (of {len(values)})")
        print(f"{label}: " + "; ".join(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
