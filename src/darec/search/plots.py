"""Pictures of a search: best-so-far validation NDCG@10 by trial, and the adapter chosen
for each layer in each trial."""

from __future__ import annotations

from pathlib import Path

from darec.io import pyplot, save_figure


def plot_progress(trials: list[dict], path: Path) -> None:
    """``trials``: dicts with number, state (complete|pruned|...) and value (None if none)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [t for t in trials if t["value"] is not None]
    for state, marker in (("complete", "o"), ("pruned", "x")):
        points = [t for t in done if t["state"] == state]
        ax.scatter([t["number"] for t in points], [t["value"] for t in points], marker=marker, label=f"{state} trial", alpha=0.7)
    best, xs, ys = float("-inf"), [], []
    for t in sorted(done, key=lambda t: t["number"]):
        if t["state"] == "complete":
            best = max(best, t["value"])
        if best > float("-inf"):
            xs.append(t["number"])
            ys.append(best)
    ax.step(xs, ys, where="post", color="black", label="best so far")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation NDCG@10")
    ax.legend()
    save_figure(fig, path)


def plot_plans(plans: list[tuple[int, list[str]]], choices: list[str], path: Path) -> None:
    """A layers x trials grid coloured by plan entry (``choices``: the legend's order)."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if not plans:
        return
    colours = plt.get_cmap("tab10").colors + plt.get_cmap("Set3").colors
    grid = [[choices.index(entry) if entry in choices else len(choices) for entry in plan] for _, plan in plans]
    n_layers = len(plans[0][1])
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(plans) + 3), max(3, 0.2 * n_layers + 1.5)))
    cmap = ListedColormap([colours[i % len(colours)] for i in range(len(choices) + 1)])
    ax.imshow([list(col) for col in zip(*grid)], aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=len(choices))
    ax.set_xticks(range(len(plans)), [str(n) for n, _ in plans], fontsize=7)
    ax.set_yticks(range(n_layers), [str(i) for i in range(n_layers)], fontsize=7)
    ax.set_xlabel("trial")
    ax.set_ylabel("layer")
    used = sorted({v for row in grid for v in row})
    ax.legend(handles=[Patch(color=cmap(v), label=choices[v] if v < len(choices) else "other") for v in used],
              bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    save_figure(fig, path)
