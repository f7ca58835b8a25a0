"""Draw the book's static figures (not computed from data) into notebooks/figures/, deterministically.

    .venv/bin/python tools/draw_figures.py          # rewrite the SVGs
    .venv/bin/python tools/draw_figures.py --check  # exit 1 if a committed SVG differs from a fresh drawing

The chapters embed them as images, so re-executing a notebook never redraws them; tests/test_plotting.py
checks that the committed files are what this script draws.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tt_helpers import plotting  # noqa: E402

FIGURES = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "figures"
DRAWINGS = {"two_towers.svg": plotting.two_tower_diagram}


def render(draw) -> str:
    plotting.apply_style()
    with matplotlib.rc_context({"svg.hashsalt": "two-towers", "svg.fonttype": "path"}):
        ax = draw()
        buffer = io.StringIO()
        ax.figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(ax.figure)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for name, draw in DRAWINGS.items():
        path, svg = FIGURES / name, render(draw)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != svg:
                stale.append(name)
        else:
            FIGURES.mkdir(parents=True, exist_ok=True)
            path.write_text(svg, encoding="utf-8")
    if stale:
        print(f"stale figures: {stale}; run python tools/draw_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
