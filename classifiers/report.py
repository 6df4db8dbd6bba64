"""Print evaluation results as tables and draw their curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_evaluation(result: dict[str, Any], console: Console) -> None:
    """Print the RouteLLM and cost-quality tables of an ``evaluate_records`` result."""
    console.print(f"mode: {result['mode']}, seed: {result['seed']}, "
                  f"rows scored: {result['rows_scored']}, tiers: {', '.join(result['tiers'])}")
    if "routellm" in result:
        console.print(_routellm_table(result["routellm"], result["tiers"]))
    if "cost_quality" in result:
        console.print(_cost_table(result["cost_quality"]))
    if "cost_quality_skipped" in result:
        console.print(result["cost_quality_skipped"], markup=False)


PLOT_INSTALL_HINT = "plotting needs matplotlib: pip install -e '.[plot]' (or matplotlib itself)"


def check_plotting() -> None:
    """Raise RuntimeError with an install hint when matplotlib is missing, before any work."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeError(PLOT_INSTALL_HINT)


def write_plot(result: dict[str, Any], path: Path) -> None:
    """Draw the cost-quality curves (or PGR summary) into a PNG at ``path``.

    Raises RuntimeError with an install hint when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(PLOT_INSTALL_HINT) from None
    figure, axis = plt.subplots(figsize=(7, 5))
    if "cost_quality" in result:
        _draw_cost_curves(axis, result["cost_quality"])
    else:
        _draw_apgr_bars(axis, result["routellm"])
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _routellm_table(table: dict[str, Any], tiers: list[str]) -> Table:
    title = (f"RouteLLM metrics, weak={tiers[0]} strong={tiers[-1]}, {table['rows']} rows "
             "labelled for both")
    out = Table(title=title)
    for column in ("router", "APGR", "PGR(50%)", "CPT(50%)", "CPT(80%)"):
        out.add_column(column)
    for name, values in table.items():
        if isinstance(values, dict):
            pgr50 = values.get("pgr50")
            out.add_row(name, f"{values['apgr']:.3f}", "-" if pgr50 is None else f"{pgr50:.3f}",
                        f"{values['cpt50']:.1%}", f"{values['cpt80']:.1%}")
    return out


def _cost_table(table: dict[str, Any]) -> Table:
    title = (f"cost-quality, {table['rows']} rows with quality and cost for every tier; "
             f"frontier quality {table['frontier_quality']:.3f}, "
             f"cost shares relative to always-frontier")
    out = Table(title=title)
    for column in ("router", "AIQ", "cost for 90%", "cost for 95%", "cost for 100%",
                   "fixed cost", "fixed quality"):
        out.add_column(column)
    for name, values in table.items():
        if not isinstance(values, dict):
            continue
        if "curve" in values:
            shares = [_share(values.get(f"cost_share_{t}")) for t in (90, 95, 100)]
            out.add_row(name, format_aiq(values["aiq"]), *shares, "", "")
        else:
            # An always-one-tier router is a single point, not a curve.
            out.add_row(name, "", "", "", "", _share(values["cost_share"]),
                        f"{values['quality']:.3f}")
    return out


def _share(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1%}"


def format_aiq(value: float | None) -> str:
    """Return AIQ with three decimals, or "-" for a curve without one (a single cost)."""
    return "-" if value is None else f"{value:.3f}"


def _draw_cost_curves(axis: Any, table: dict[str, Any]) -> None:
    frontier_cost = table["frontier_cost"]
    for name, values in table.items():
        if isinstance(values, dict) and "curve" in values:
            curve = values["curve"]
            axis.plot([c / frontier_cost for c, _ in curve], [q for _, q in curve],
                      marker=".", label=f"{name} (AIQ {format_aiq(values['aiq'])})")
        elif isinstance(values, dict):
            axis.scatter([values["cost_share"]], [values["quality"]], marker="x", label=name)
    axis.set_xlabel("cost relative to always-frontier")
    axis.set_ylabel("mean quality")
    axis.legend(fontsize=8)


def _draw_apgr_bars(axis: Any, table: dict[str, Any]) -> None:
    names = [name for name, values in table.items() if isinstance(values, dict)]
    axis.bar(names, [table[name]["apgr"] for name in names])
    axis.set_ylabel("APGR")
