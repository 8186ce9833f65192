"""How one metric record reads in a table cell (Table 1 and the seeds tables): a number with its interval or
spread, or what kept it from being one ("not run", "missing weights (<file>)", "unverified weights: <label>")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medsg_lib.metrics.weights import is_unverified

DASH = "—"  # what does not apply (literature rows, a value the paper does not report)
NOT_RUN = "not run"
MISSING_PREFIX = "missing weights: "
UNVERIFIED_PREFIX = "unverified weights: "


def fmt_number(value: float | None, digits: int = 3, scale: float = 1.0) -> str:
    """``value * scale`` with ``digits`` decimals, or "—" for None."""
    return DASH if value is None else f"{value * scale:.{digits}f}"


def fmt_value_ci(rec: dict[str, Any]) -> str:
    """``"55.796 [50.120, 61.002]"`` (value and 95% interval) or ``"55.796"`` without an interval."""
    text = fmt_number(rec["value"])
    if rec.get("ci_low") is not None and rec.get("ci_high") is not None:
        text += f" [{fmt_number(rec['ci_low'])}, {fmt_number(rec['ci_high'])}]"
    return text


def fmt_kid(rec: dict[str, Any]) -> str:
    """KID x 1e3 with its std over subsets: ``"1.234 ± 0.567"``."""
    text = fmt_number(rec["value"], scale=1e3)
    return text if rec.get("std") is None else f"{text} ± {fmt_number(rec['std'], scale=1e3)}"


def fmt_plain(rec: dict[str, Any]) -> str:
    return fmt_number(rec["value"])


def _seed_cell(rec: dict[str, Any], fmt: Callable[[dict[str, Any]], str]) -> str:
    """``"mean ± sd"`` of a cell over seeds, each number formatted as ``fmt`` formats a value."""
    plain = {k: v for k, v in rec.items() if k not in ("std", "ci_low", "ci_high")}
    return f"{fmt({**plain, 'value': rec['value']})} ± {fmt({**plain, 'value': rec['seed_sd']})}"


def cell(rec: dict[str, Any] | None, fmt: Callable[[dict[str, Any]], str]) -> str:
    """The text of one of our cells: "not run", "missing weights (<file>)", "unverified weights: <label>" (a
    number from random or unpublished weights is never shown as one), another status, ``"mean ± sd"`` over
    training seeds (:func:`medsg_lib.seeds.aggregate_seeds`), or ``fmt(rec)``."""
    if rec is None:
        return NOT_RUN
    status = rec.get("status") or "ok"
    if status.startswith(MISSING_PREFIX):
        return f"missing weights ({status[len(MISSING_PREFIX) :]})"
    weights = str(rec.get("weights") or "")
    if is_unverified(weights):
        return f"{UNVERIFIED_PREFIX}{weights}"
    if rec.get("value") is None:
        return status
    if rec.get("n_seeds", 1) > 1:
        return _seed_cell(rec, fmt)
    return fmt(rec)
