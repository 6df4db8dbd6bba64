"""Per-million-token prices of RouterBench models, recovered from RouterBench's per-call costs.

RouterBench records ``<model>|total_cost`` (USD) for every call but no price table. Each cost is
``input_tokens * p_in + output_tokens * p_out``, so :func:`fit_routerbench_prices` counts the
prompt and response tokens of every row with tiktoken ``cl100k_base`` and solves for
``(p_in, p_out)`` by least squares. On the 3,178 rows of the RouterBench subset the fit is exact
(R² = 1.000 for all 11 models), which shows that RouterBench itself counted tokens with
``cl100k_base``. The fitted prices match the list prices of late 2023: for example Mistral-7B at
$0.20 per million tokens, Mixtral-8x7B at $0.60, and GPT-4 Turbo at $10 input / $30 output.
:data:`ROUTERBENCH_PRICES` contains the fitted values (rounded to 3 decimals), so fixtures
need no fit.
"""

from __future__ import annotations

import ast
import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.support import tokens
from tests.support.recorded import SharedDataMissingError

_ROUTERBENCH_DIR = ("routerbench-subset", "datasets", "routerbench_zs")


@dataclass(frozen=True, slots=True)
class FittedPrice:
    """USD per million input and output tokens, and the fit's R² over ``rows`` calls."""

    input_per_million: float
    output_per_million: float
    r_squared: float
    rows: int


# Output of fit_routerbench_prices() on the RouterBench subset, rounded to 3 decimals.
ROUTERBENCH_PRICES: dict[str, tuple[float, float]] = {
    "mistralai/mistral-7b-chat": (0.2, 0.2),
    "mistralai/mixtral-8x7b-chat": (0.6, 0.6),
    "gpt-4-1106-preview": (10.0, 30.0),
}


def _token_count(cell: str) -> int:
    try:
        parts = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        parts = [cell]
    if not isinstance(parts, (list, tuple)):
        parts = [parts]
    return sum(tokens.count_text_tokens(str(part)) for part in parts)


def _fit(features: list[tuple[int, int]], costs: list[float]) -> FittedPrice:
    matrix = np.asarray(features, dtype=float)
    target = np.asarray(costs, dtype=float)
    coefficients, *_ = np.linalg.lstsq(matrix, target, rcond=None)
    residual = float(((target - matrix @ coefficients) ** 2).sum())
    spread = float(((target - target.mean()) ** 2).sum())
    r_squared = 1.0 - residual / spread if spread > 0 else 1.0
    return FittedPrice(
        round(float(coefficients[0]) * 1e6, 3),
        round(float(coefficients[1]) * 1e6, 3),
        r_squared,
        len(costs),
    )


def fit_routerbench_prices(data_dir: Path, models: Iterable[str]) -> dict[str, FittedPrice]:
    """Fit the per-million-token prices of ``models`` (RouterBench column names) from the raw CSVs.

    Takes about 2 s for 11 models, most of it tokenizing.

    Raises:
        SharedDataMissingError: the RouterBench CSV folder is missing.
        KeyError: a model has no ``|total_cost`` column.
    """
    folder = data_dir.joinpath(*_ROUTERBENCH_DIR)
    if not folder.is_dir():
        raise SharedDataMissingError(f"RouterBench CSVs not found at {folder}")
    csv.field_size_limit(1 << 30)
    wanted = list(models)
    features: dict[str, list[tuple[int, int]]] = {model: [] for model in wanted}
    costs: dict[str, list[float]] = {model: [] for model in wanted}
    for path in sorted(folder.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                prompt_tokens = _token_count(row["prompt"])
                for model in wanted:
                    output_tokens = _token_count(row[f"{model}|model_response"])
                    features[model].append((prompt_tokens, output_tokens))
                    costs[model].append(float(row[f"{model}|total_cost"]))
    return {model: _fit(features[model], costs[model]) for model in wanted}
