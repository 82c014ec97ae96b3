"""What the experiment scripts share for their plots: pyplot on the headless Agg backend, and `--plot-only`.

Each script draws its PNG from the JSON it has just written; with `--plot-only` it redraws the PNG from the JSON
already in its results/ folder and runs nothing else (no model, no torch or jax import).
"""

import json


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
