"""What the experiment scripts share for their plots: pyplot on the headless Agg backend, and `--plot-only`.

Each script draws its PNG from the JSON it has just written; with `--plot-only` it redraws the PNG from the JSON
already in its results/ folder and runs nothing else (no model, no torch or jax import).
"""

import json
import os


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str) -> None:
    """Lays out, writes and closes a figure (the same size and resolution for every experiment's PNG)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def redraw(plot, json_path: str, png_path: str) -> int:
    """`--plot-only`: `plot(results, png_path)` with the results read from `json_path`."""
    with open(json_path, encoding="utf-8") as f:
        plot(json.load(f), png_path)
    print(f"{png_path} drawn from {json_path}")
    return 0


def parse_or_redraw(parser, plot, results_dir: str, default_name: str):
    """Adds `--name` (the results file stem) and `--plot-only` to `parser` and parses the command line. Returns
    (args, results_dir/NAME.json); with `--plot-only` it redraws NAME.png from that JSON and exits instead."""
    parser.add_argument("--name", default=default_name, help="results file stem")
    parser.add_argument("--plot-only", action="store_true", help="redraw NAME.png from the existing NAME.json and exit")
    args = parser.parse_args()
    out = os.path.join(results_dir, f"{args.name}.json")
    if args.plot_only:
        raise SystemExit(redraw(plot, out, os.path.splitext(out)[0] + ".png"))
    return args, out


def seed_bars(ax, bars, ylim, title: str) -> None:
    """Dev accuracy bars: `bars` is [(label, value, per-seed values or None, color)]; each bar shows its value and,
    for an arm run over seeds (value = their median), one dot per seed."""
    for x, (_, value, seeds, color) in enumerate(bars):
        ax.bar(x, value, color=color, alpha=0.8)
        ax.text(x, value + 0.005, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
        if seeds:
            ax.plot([x] * len(seeds), seeds, "k.", ms=5)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set(ylim=ylim, ylabel="dev accuracy (median of seeds; dots: each seed)", title=title)
