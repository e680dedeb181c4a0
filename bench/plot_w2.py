#!/usr/bin/env python3
"""Plot W2 fan-out time against hosts, one line per implementation (and shard count), as SVG.

    .venv/bin/python bench/plot_w2.py RESULTS.jsonl [--since ISO-TIME] [--phase cold|warm] [--out FILE.svg]

Reads the JSON lines ``bench/w2_fanout.py --json-out`` appended (relative paths: under
bench/results/), keeps the W2 records without errors (from ``--since`` on, if given: a
``run_at`` prefix such as ``2026-12-03T16``), and draws cold and warm seconds against fleet
size: cold solid, warm dashed (``--phase`` draws one of them alone, on its own scale), one
colour per implementation label (``chopsticks workers=2`` ...), the median where a size was
run more than once. Standard library only; the SVG is
written by hand.
"""

import argparse
import json
import os
import statistics

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
WIDTH, HEIGHT, MARGIN = 640, 400, 60


def series(records, phases=("cold", "warm")):
    """label -> {"cold": {n: s}, "warm": {n: s}}, medians over repeated runs."""
    raw = {}
    for r in records:
        label = r["impl"] + (" workers=%d" % r["workers"] if r.get("workers") else "")
        for phase in phases:
            value = r.get(phase + "_s")
            if isinstance(value, (int, float)):
                raw.setdefault(label, {}).setdefault(phase, {}).setdefault(r["n"], []).append(value)
    return {label: {phase: {n: statistics.median(v) for n, v in points.items()} for phase, points in phases.items()}
            for label, phases in raw.items()}


def svg(lines, title):
    """The SVG text of ``lines`` (from ``series``), linear axes from 0."""
    xs = [n for phases in lines.values() for points in phases.values() for n in points]
    ys = [s for phases in lines.values() for points in phases.values() for s in points.values()]
    x_max, y_max = max(xs) * 1.05, max(ys) * 1.1
    sx = lambda n: MARGIN + n / x_max * (WIDTH - 2 * MARGIN)  # noqa: E731
    sy = lambda s: HEIGHT - MARGIN - s / y_max * (HEIGHT - 2 * MARGIN)  # noqa: E731
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12">' % (WIDTH, HEIGHT),
           '<rect width="100%" height="100%" fill="white"/>',
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN,
                                                                      HEIGHT - MARGIN),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (MARGIN, MARGIN, MARGIN, HEIGHT - MARGIN),
           '<text x="%d" y="%d" text-anchor="middle">hosts</text>' % (WIDTH / 2, HEIGHT - 15),
           '<text x="15" y="%d" transform="rotate(-90 15 %d)" text-anchor="middle">%s</text>'
           % (HEIGHT / 2, HEIGHT / 2, title)]
    for n in sorted(set(xs)):
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (sx(n), HEIGHT - MARGIN + 15, n))
    for i in range(6):
        s = y_max / 1.1 * i / 5
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (MARGIN - 5, sy(s) + 4, s))
    for k, (label, phases) in enumerate(sorted(lines.items())):
        colour = COLOURS[k % len(COLOURS)]
        for phase, dash in (("cold", ""), ("warm", ' stroke-dasharray="5,4"')):
            points = sorted(phases.get(phase, {}).items())
            if points:
                path = " ".join("%.1f,%.1f" % (sx(n), sy(s)) for n, s in points)
                out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>' % (path, colour, dash))
                out += ['<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (sx(n), sy(s), colour) for n, s in points]
        out.append('<text x="%d" y="%d" fill="%s">%s</text>' % (MARGIN + 10, MARGIN + 15 * k, colour, label))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="W2 JSON lines (relative: under bench/results/)")
    parser.add_argument("--since", default="", help="only records whose run_at starts at or after this")
    parser.add_argument("--phase", choices=("cold", "warm"), help="draw only this phase (default: both)")
    parser.add_argument("--out", default="w2_workers.svg", help="SVG file (relative: under bench/results/)")
    args = parser.parse_args()
    path = args.results if os.path.isabs(args.results) else os.path.join(RESULTS, args.results)
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if r.get("workload") == "W2" and "error" not in r
               and r.get("run_at", "") >= args.since]
    if not records:
        raise SystemExit("no W2 records in %s%s" % (path, " since " + args.since if args.since else ""))
    out = args.out if os.path.isabs(args.out) else os.path.join(RESULTS, args.out)
    with open(out, "w") as f:
        phases = (args.phase,) if args.phase else ("cold", "warm")
        title = "%s fan-out, seconds" % args.phase if args.phase else "seconds (cold solid, warm dashed)"
        f.write(svg(series(records, phases), title))
    print(out)


if __name__ == "__main__":
    main()
