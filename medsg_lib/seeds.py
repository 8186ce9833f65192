"""Several training seeds per model: a table cell over seeds, and which rows differ by more than the seeds do.

A *replicate* is one training seed of a generated set (record field ``train_seed``) or one draw of the real
floor's held-out images (``heldout_draw``; :func:`medsg_lib.evaluate.real_vs_real_baseline`). Records of one
(model, class, metric, protocol) and different replicates are one cell of Table 1: :func:`aggregate_seeds`
turns them into one record whose value is their mean, with ``seed_sd`` (sample standard deviation),
``seed_values`` and ``n_seeds``.

The ranking rule (:func:`ranking_table`): two rows of one class and metric *differ* when the exact two-sided
permutation test of the difference of their means over replicates gives p <= ``alpha``. With n and m replicates
the smallest possible p is ``2 / C(n + m, n)`` (two-sided): 0.1 for 3 against 3 seeds, so at 3 seeds a pair is
called different only when every seed of one row is on the same side of every seed of the other, and rows that
differ only by seed noise are called different at the rate ``alpha`` per pair (no correction for the many
pairs of a table). The test needs no assumption about the shape of the seed distribution; it cannot tell a
small real difference from noise at 3 seeds, and it says nothing about seeds that were not run.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

import pandas as pd

REPLICATE_FIELDS: tuple[str, ...] = ("train_seed", "heldout_draw")
DEFAULT_ALPHA = 0.1
RANKING_RULE = (
    "exact two-sided permutation test of the difference of means over seeds (held-out draws for the real "
    "floor), at alpha = {alpha:g}; with 3 seeds per row the smallest possible p is 0.1, so a pair differs only "
    "when the seeds of the two rows do not overlap, which pure seed noise also produces with probability 0.1 "
    "per pair"
)
CellKey = tuple[str, str, str, str]  # (model, class, metric, protocol)


def replicate(record: dict[str, Any]) -> int:
    """The replicate a record belongs to: its ``train_seed``, else its ``heldout_draw``, else 0."""
    for name in REPLICATE_FIELDS:
        if record.get(name) is not None:
            return int(record[name])
    return 0


def cell_key(record: dict[str, Any]) -> CellKey:
    return (record["model"], record["class"], record["metric"], record["protocol"])


def group_replicates(records: Sequence[dict[str, Any]]) -> dict[CellKey, dict[int, dict[str, Any]]]:
    """(model, class, metric, protocol) -> replicate -> its last record, in the order first seen."""
    groups: dict[CellKey, dict[int, dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(cell_key(r), {})[replicate(r)] = r
    return groups


def aggregate_seeds(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (model, class, metric, protocol): the record itself when there is one replicate, else a
    record with ``value`` = the mean over replicates, ``seed_sd`` (sample sd), ``seed_values`` and
    ``replicates`` (in replicate order), ``n_seeds``, and no interval or ``std`` (those are of one replicate).
    A replicate without a value (e.g. missing weights) makes the cell's value None with that record's status.
    """
    out = []
    for by_rep in group_replicates(records).values():
        reps = sorted(by_rep)
        if len(reps) == 1:
            out.append(by_rep[reps[0]])
            continue
        recs = [by_rep[k] for k in reps]
        values = [r.get("value") for r in recs]
        agg = {k: v for k, v in recs[0].items() if k not in ("ci_low", "ci_high", "std", *REPLICATE_FIELDS)}
        agg.update(n_seeds=len(recs), replicates=reps, seed_values=values)
        missing = next((r for r in recs if r.get("value") is None), None)
        if missing is not None:
            agg.update(value=None, seed_sd=None, status=missing.get("status"))
        else:
            agg.update(value=statistics.fmean(values), seed_sd=statistics.stdev(values))
        out.append(agg)
    return out


def check_one_code_version(sets: Sequence[tuple[str, str]]) -> None:
    """Raise ``ValueError`` when ``sets`` (``(code version, description)`` of each generated set, e.g. from
    :class:`medsg_lib.evaluate.EvalTarget`'s ``train_code``) were trained by more than one version of the
    code, naming an example of each: results of two code versions never share a table."""
    seen: dict[str, str] = {}
    for code, what in sets:
        seen.setdefault(str(code), what)
    if len(seen) > 1:
        examples = "; ".join(f"{code}: {what}" for code, what in sorted(seen.items()))
        raise ValueError(
            f"these generated sets come from runs trained by {len(seen)} versions of the code ({examples}); "
            "retrain the older runs with today's code (delete their folders under runs/ and generated/, or "
            "run the notebooks with resume=False) so that one table holds one version"
        )


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided permutation p-value of ``mean(a) - mean(b)``: the share of the ``C(n+m, n)`` ways to
    split the pooled values into groups of the same sizes whose absolute difference of means is at least the
    observed one (a relative tolerance of 1e-9 counts ties)."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if not a or not b:
        raise ValueError("permutation_p needs at least one value on each side")
    pooled, n = a + b, len(a)
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    total = sum(pooled)
    tol = 1e-9 * max(1.0, abs(observed))
    hits = splits = 0
    for idx in itertools.combinations(range(len(pooled)), n):
        s = sum(pooled[i] for i in idx)
        diff = abs(s / n - (total - s) / len(b))
        hits += diff >= observed - tol
        splits += 1
    return hits / splits


def min_attainable_p(n: int, m: int) -> float:
    """The smallest p :func:`permutation_p` can give with ``n`` and ``m`` values (two-sided)."""
    return min(1.0, 2 / math.comb(n + m, n))


def ranking_table(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    labels: dict[str, str] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> pd.DataFrame:
    """Every pair of rows of one class, metric and protocol that both have at least 2 replicates, with their
    means and sds over replicates, the difference ``a - b``, the exact permutation p (:func:`permutation_p`)
    and the verdict at ``alpha``: ``"a < b"``, ``"a > b"`` or ``"not separated"`` (module docstring).

    ``metrics``: the metric names to rank (e.g. ``("frd", "fd_classifier", "msssim")``); ``labels``: model
    name -> display label.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    labels = labels or {}
    cells: dict[tuple[str, str, str], list[tuple[str, list[float]]]] = {}
    for (model, cls, metric, protocol), by_rep in group_replicates(records).items():
        values = [by_rep[k].get("value") for k in sorted(by_rep)]
        if metric in metrics and len(values) >= 2 and all(v is not None for v in values):
            cells.setdefault((metric, protocol, cls), []).append((model, [float(v) for v in values]))
    rows = []
    for (metric, protocol, cls), models in cells.items():
        for (ma, va), (mb, vb) in itertools.combinations(models, 2):
            p = permutation_p(va, vb)
            diff = statistics.fmean(va) - statistics.fmean(vb)
            verdict = "not separated" if p > alpha else ("a < b" if diff < 0 else "a > b")
            rows.append(
                {
                    "metric": metric,
                    "protocol": protocol,
                    "class": cls,
                    "a": labels.get(ma, ma),
                    "b": labels.get(mb, mb),
                    "mean_a": statistics.fmean(va),
                    "sd_a": statistics.stdev(va),
                    "n_a": len(va),
                    "mean_b": statistics.fmean(vb),
                    "sd_b": statistics.stdev(vb),
                    "n_b": len(vb),
                    "difference": diff,
                    "p_value": p,
                    "min_p": min_attainable_p(len(va), len(vb)),
                    "verdict": verdict,
                }
            )
    columns = ["metric", "protocol", "class", "a", "b", "mean_a", "sd_a", "n_a", "mean_b", "sd_b", "n_b"]
    return pd.DataFrame(rows, columns=[*columns, "difference", "p_value", "min_p", "verdict"])


def summarise_over_seeds(
    table: pd.DataFrame, keys: Sequence[str], values: Sequence[str], seed_column: str
) -> pd.DataFrame:
    """One row per ``keys`` of a table that holds one row per ``keys`` and seed (``seed_column``): for each of
    ``values`` the mean over seeds, ``<value>_sd`` (sample standard deviation; NaN for one seed), ``<value>_min``
    and ``<value>_max``, and ``n_seeds``. Missing values (NaN: e.g. no lesion in a Normal image) are left out
    of their column's statistics. Rows keep the first seed's order."""
    missing = [c for c in (*keys, *values, seed_column) if c not in table.columns]
    if missing:
        raise ValueError(f"summarise_over_seeds: the table has no column(s) {missing}")
    groups = table.groupby(list(keys), sort=False, dropna=False)
    out = groups[seed_column].nunique().rename("n_seeds").to_frame()
    for v in values:
        stats = groups[v].agg(["mean", "std", "min", "max"])
        stats.columns = [v, f"{v}_sd", f"{v}_min", f"{v}_max"]
        out = out.join(stats)
    return out.reset_index()


def mean_sd_table(
    summary: pd.DataFrame, keys: Sequence[str], values: Sequence[str], digits: int = 3
) -> pd.DataFrame:
    """A :func:`summarise_over_seeds` table for reading: ``keys``, ``n_seeds`` and each value as "mean ± sd"
    (just the mean for one seed, "—" where no seed had a value), rounded to ``digits``."""

    def cell(mean: float, sd: float) -> str:
        if pd.isna(mean):
            return "—"
        return f"{mean:.{digits}f}" if pd.isna(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"

    out = summary[[*keys, "n_seeds"]].copy()
    for v in values:
        out[v] = [cell(m, s) for m, s in zip(summary[v], summary[f"{v}_sd"], strict=True)]
    return out
