"""Table 1 of the paper, regenerated from metric records (``medsg_lib.evaluate``) next to the paper's numbers.

Rows: the paper's nine rows in its order (``PAPER_TABLE1``), then ours that the paper lacks, when records exist:
the paper's whole-set baselines (GAN, DCGAN) per class (a fair per-class comparison: the paper compares their
whole generated set with the whole real set) and the "real train vs real held-out" floor per class. Records of any other (model, class) follow
at the end, so nothing measured is dropped.

Columns: the paper's FID and LPIPS, then ours, each cell a string: FID (pytorch-fid, with its 95% bootstrap
interval when computed), FID (paper protocol), KID x 1e3 (pytorch-fid features, mean +- std over subsets),
Fréchet distance and KID x 1e3 in the classifier's features, precision and recall (classifier features),
LPIPS, and the sample sizes. When a (model, class, metric, protocol) was recorded several times the LAST record
wins (records are appended in time order). Cells: ``"missing weights (<file>)"`` when the pretrained file was
absent, ``"unverified weights: <label>"`` (never a number) when the record's weights label says UNVERIFIED
(random or unpublished weights, :func:`medsg_lib.metrics.weights.is_unverified`), ``"not run"`` when no record
exists, ``"—"`` for what does not apply (literature rows, a value the paper does not report).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from medsg_lib.config import CLASS_NAMES
from medsg_lib.evaluate import REAL_BASELINE_MODEL
from medsg_lib.families import FAMILIES, labels
from medsg_lib.files import ALL_CLASSES, write_text_atomic
from medsg_lib.metrics.frd import FRD_PROTOCOL
from medsg_lib.report import write_table
from medsg_lib.seeds import DEFAULT_ALPHA, RANKING_RULE, aggregate_seeds, replicate
from medsg_lib.table_cells import DASH, NOT_RUN, cell, fmt_kid, fmt_number, fmt_plain, fmt_value_ci

LPIPS_COLUMN = "LPIPS (ours)"
MSSSIM_COLUMN = "MS-SSIM (lower = more diverse)"
TABLE1_NOTES = """\
Notes. FID lower is better, LPIPS higher is better. "FID paper" and "LPIPS paper" are copied from the paper
(literature LPIPS rows are quoted there, not rerun). Our FID (pytorch-fid) is the standard TF-Inception FID; "FID
paper protocol" uses torchvision's ImageNet InceptionV3 as the authors' code (for Med-StyleGAN2 the mean over
the two source classes, as the authors). References are the TRAINING images of the class ("all" for GAN/DCGAN
rows, as in the paper). FID is biased upwards at small n: compare rows at similar n_fake and against the real
train vs real test floor. KID is x 1e3. Med-StyleGAN2 LPIPS: mean over pairs of outputs of one source image;
GAN/DCGAN LPIPS: random pairs of samples. "missing weights (file)": the pretrained file was not available
offline. FRD: Fréchet Radiomic Distance v1 (frd-score; ~400 PyRadiomics features, z-scored against the real
set, log of the squared Fréchet distance; lower is better, a difference of 0.69 is a factor 2; no pretrained
weights). MS-SSIM: between outputs, on the same pairs as LPIPS (lower = more diverse); for the real rows,
between random held-out images of the class (the diversity of the real data).
StarGAN, CycleGAN and RSGAN: the paper quotes their LPIPS from other papers on other data ("literature, quoted");
we rerun them here on the same images and metrics, and their rows carry the quoted LPIPS beside ours, for
reference only. StarGAN and CycleGAN are deterministic translators: one output per validation source image (so
n_fake can be below the other rows'), and their LPIPS / MS-SSIM are over random pairs of outputs. CycleGAN is two
two-domain models, Normal <-> COVID-19 and Normal <-> Non-COVID: COVID-19 and Non-COVID images are translated
from Normal ones, Normal images from both. RSGAN is the relativistic standard GAN loss on the DCGAN networks. SDGAN
stays quoted: it learns from identity-paired images (several images of one subject under varied conditions), which
class-labelled X-ray sets do not have.
"""


SEEDS_NOTES = """\
Seeds. Each of our cells is the mean ± sample sd over {n} training seeds of the model (for the real floor:
{n} draws of 3/4 of the held-out images, which overlap, so their sd understates an independent sample's); the
per-seed values are in table1_seeds.csv, and ranking.md says which rows differ by more than the seeds do
({rule}). Intervals of one seed's images are in metrics.jsonl, not here.
"""


class PaperRow(NamedTuple):
    """One row of the paper's Table 1; None where the paper prints "-"."""

    model: str  # the model as the paper names it: a family's `paper_row`
    cls: str | None  # the class of a per-class row ("Med-StyleGAN2 (Normal)"); None: the whole set or a quote
    fid: float | None
    lpips: float | None
    source: str  # "paper" | "literature"

    @property
    def label(self) -> str:
        if self.source == "literature":
            return f"{self.model} (literature)"
        return self.model if self.cls is None else f"{self.model} ({self.cls})"


PAPER_TABLE1: tuple[PaperRow, ...] = (
    PaperRow("GAN", None, 2446.535, None, "paper"),
    PaperRow("DCGAN", None, 153.014, None, "paper"),
    PaperRow("CycleGAN", None, None, 0.099, "literature"),
    PaperRow("Med-StyleGAN2", "Normal", 55.796, 0.199, "paper"),
    PaperRow("StarGAN", None, None, 0.212, "literature"),
    PaperRow("Med-StyleGAN2", "COVID-19", 62.599, 0.222, "paper"),
    PaperRow("Med-StyleGAN2", "Non-COVID", 81.230, 0.239, "paper"),
    PaperRow("RSGAN", None, None, 0.315, "literature"),
    PaperRow("SDGAN", None, None, 0.514, "literature"),
)
SOURCE_LABELS: dict[str, str] = {
    "paper": "paper",
    "literature": "literature, quoted",
    "ours": "ours",
    "ours+quote": "ours (LPIPS paper: literature, quoted)",
}
REAL_LABEL = "Real train vs real held-out"


def model_labels() -> dict[str, str]:
    """Record model -> display label: every registered family's label and the real floor's."""
    return {**labels(), REAL_BASELINE_MODEL: REAL_LABEL}


def paper_family(paper_model: str) -> str | None:
    """The registry key of the family whose ``paper_row`` is ``paper_model`` (None: none is registered)."""
    return next((name for name, f in FAMILIES.items() if f.paper_row == paper_model), None)


def paper_row_key(row: PaperRow) -> tuple[str, str] | None:
    """The (model, class) of our records that reproduce a row the paper measured (None: a quoted row, or no
    family fills it)."""
    family = paper_family(row.model)
    if row.source != "paper" or family is None:
        return None
    return family, row.cls or ALL_CLASSES


def family_rows(name: str) -> list[tuple[str, tuple[str, str]]]:
    """(label, (model, class)) of every row a family can have: the whole set, then each class."""
    label = model_labels().get(name, name)
    return [(f"{label} ({c})", (name, c)) for c in (ALL_CLASSES, *CLASS_NAMES)]


# ----------------------------------------------------------------------------------------------------------
# Cells


# ----------------------------------------------------------------------------------------------------------
# Records -> rows


RecordKey = tuple[str, str, str, str]  # (model, class, metric, protocol)


def index_records(records: Sequence[dict[str, Any]]) -> dict[RecordKey, dict[str, Any]]:
    """The last record of each (model, class, metric, protocol)."""
    return {(r["model"], r["class"], r["metric"], r["protocol"]): r for r in records}


def _any_protocol(
    index: dict[RecordKey, dict[str, Any]], model: str, cls: str, metric: str
) -> dict[str, Any] | None:
    """The last record of ``metric`` for (model, class) whatever its protocol (the diversity metrics' protocol
    names the pairing, which differs between image-to-image and noise-to-image models)."""
    found = [r for (m, c, name, _), r in index.items() if (m, c, name) == (model, cls, metric)]
    return found[-1] if found else None


def _columns(feature_name: str) -> list[tuple[str, str, str, Callable[[dict[str, Any]], str]]]:
    """(column, metric, protocol, formatter) of our metric columns."""
    domain = f"domain:{feature_name}"
    return [
        ("FID (pytorch-fid) [95% CI]", "fid", "pytorch-fid", fmt_value_ci),
        ("FID (paper protocol)", "fid", "paper", fmt_value_ci),
        ("KID x1e3 (pytorch-fid)", "kid", "pytorch-fid", fmt_kid),
        ("FRD (radiomics)", "frd", FRD_PROTOCOL, fmt_plain),
        (f"FD ({feature_name}) [95% CI]", f"fd_{feature_name}", domain, fmt_value_ci),
        (f"KID x1e3 ({feature_name})", f"kid_{feature_name}", domain, fmt_kid),
        (f"precision ({feature_name})", "precision", domain, fmt_plain),
        (f"recall ({feature_name})", "recall", domain, fmt_plain),
    ]


def _sample_sizes(
    index: dict[RecordKey, dict[str, Any]], model: str, cls: str, feature_name: str
) -> tuple[str, str]:
    """n_real, n_fake of the first Fréchet record found (pytorch-fid, paper, then domain features)."""
    for metric, protocol in (
        ("fid", "pytorch-fid"),
        ("fid", "paper"),
        (f"fd_{feature_name}", f"domain:{feature_name}"),
    ):
        rec = index.get((model, cls, metric, protocol))
        if rec is not None and rec.get("n_real") is not None:
            return str(rec["n_real"]), str(rec["n_fake"])
    return NOT_RUN, NOT_RUN


def our_cells(
    index: dict[RecordKey, dict[str, Any]],
    key: tuple[str, str] | None,
    feature_name: str,
    seeds: bool = False,
) -> dict[str, str]:
    """Our columns of one row; ``key=None`` (a literature row) gives "—" everywhere. ``seeds``: add the
    column ``seeds`` (how many training seeds the row's cells average)."""
    columns = [name for name, *_ in _columns(feature_name)] + [
        LPIPS_COLUMN,
        MSSSIM_COLUMN,
        "n_real",
        "n_fake",
        *(["seeds"] if seeds else []),
    ]
    if key is None:
        return dict.fromkeys(columns, DASH)
    model, cls = key
    cells = {
        name: cell(index.get((model, cls, metric, protocol)), fmt)
        for name, metric, protocol, fmt in _columns(feature_name)
    }
    cells[LPIPS_COLUMN] = (
        DASH if model == REAL_BASELINE_MODEL else cell(_any_protocol(index, model, cls, "lpips"), fmt_plain)
    )
    cells[MSSSIM_COLUMN] = cell(_any_protocol(index, model, cls, "msssim"), fmt_plain)
    cells["n_real"], cells["n_fake"] = _sample_sizes(index, model, cls, feature_name)
    if seeds:
        n = {r.get("n_seeds", 1) for (m, c, _, _), r in index.items() if (m, c) == (model, cls)}
        cells["seeds"] = "/".join(map(str, sorted(n))) if n else NOT_RUN
    return cells


def build_table1(records: Sequence[dict[str, Any]], feature_name: str = "classifier") -> pd.DataFrame:
    """Table 1 as strings, rows in this order:

    - the paper's rows (its numbers, and ours where a family reproduces the row: :attr:`ModelFamily.paper_row`);
      right below a row the paper only QUOTES from the literature, our rows of that family (each class it has
      records for), with the quoted LPIPS beside our numbers;
    - then, family by family (registry order), our rows the paper lacks that have records (e.g. the whole-set
      baselines per class), then the real train-vs-held-out floor per class;
    - then any other (model, class) in ``records``, so that nothing measured is dropped.

    Columns: ``model``, ``source``, ``FID paper``, ``LPIPS paper``, our metric columns (module docstring),
    ``LPIPS (ours)``, ``MS-SSIM``, ``n_real``, ``n_fake``, and ``seeds`` when some row has several training
    seeds (its cells are then mean ± sd over seeds: :func:`medsg_lib.seeds.aggregate_seeds`).
    ``feature_name`` names the domain metrics (``fd_<name>``).
    """
    records = aggregate_seeds(records)
    seeds = any(r.get("n_seeds", 1) > 1 for r in records)
    index = index_records(records)
    present = {(m, c) for m, c, _, _ in index}
    placed: set[tuple[str, str]] = set()
    rows = []

    def ours(label: str, key: tuple[str, str], source: str = "ours", lpips: float | None = None) -> None:
        placed.add(key)
        rows.append(
            {
                "model": label,
                "source": SOURCE_LABELS[source],
                "FID paper": DASH,
                "LPIPS paper": fmt_number(lpips),
                **our_cells(index, key, feature_name, seeds),
            }
        )

    for paper in PAPER_TABLE1:
        key = paper_row_key(paper)
        rows.append(
            {
                "model": paper.label,
                "source": SOURCE_LABELS[paper.source],
                "FID paper": fmt_number(paper.fid),
                "LPIPS paper": fmt_number(paper.lpips),
                **our_cells(index, key, feature_name, seeds),
            }
        )
        if key is not None:
            placed.add(key)
        family = paper_family(paper.model)
        if paper.source == "literature" and family is not None:
            for label, fkey in family_rows(family):
                if fkey in present:
                    ours(label, fkey, "ours+quote", paper.lpips)
    for name in [*FAMILIES, REAL_BASELINE_MODEL]:
        for label, key in family_rows(name):
            if key in present and key not in placed:
                ours(label, key)
    for m, c in sorted(present - placed):
        ours(f"{m} ({c})", (m, c))
    return pd.DataFrame(rows)


_MISSING_CELL = re.compile(r"^missing weights \((.+)\)$")
MISSING_SHORT = "no weights"


def markdown_view(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Table 1 for reading, and its weights footnote: a column in which no row has a value because a
    pretrained file was missing (every cell "missing weights (<file>)" or "—") is left out and named in the
    footnote with its file; elsewhere such a cell reads "no weights" and the footnote names the file. The CSV
    and LaTeX tables keep every cell."""
    keep, dropped, short = [], [], []
    view = df.copy()
    for column in df.columns:
        missing = [_MISSING_CELL.match(str(v)) for v in df[column]]
        files = ", ".join(sorted({m.group(1) for m in missing if m}))
        if not files:
            keep.append(column)
            continue
        rest = {str(v) for v, m in zip(df[column], missing, strict=True) if not m}
        if rest <= {DASH, NOT_RUN}:
            dropped.append(f"{column} (missing weights ({files}))")
        else:
            keep.append(column)
            view[column] = [MISSING_SHORT if m else v for v, m in zip(df[column], missing, strict=True)]
            short.append(f"{column} ({files})")
    lines = []
    if dropped:
        lines.append(
            "Columns left out because no row has a value, the pretrained file not being available offline "
            "(table1.csv keeps them): " + "; ".join(dropped) + "."
        )
    if short:
        lines.append(
            f'"{MISSING_SHORT}": the pretrained file was not available offline: ' + "; ".join(short) + "."
        )
    return view[keep], "\n".join(lines)


def write_table1(df: pd.DataFrame, results_dir: Path, alpha: float | None = None) -> list[Path]:
    """Write ``results_dir/table1.csv`` and ``table1.tex`` (``df.to_latex``) with every cell, and ``table1.md``
    as :func:`markdown_view` shows it, with its weights footnote, :data:`TABLE1_NOTES` and, when the table has
    a ``seeds`` column, :data:`SEEDS_NOTES` (``alpha``: the ranking's level they name); returns the three
    paths."""
    stem = Path(results_dir) / "table1"
    view, footnote = markdown_view(df)
    csv, tex = write_table(df, stem, formats=("csv", "tex"))
    (md,) = write_table(view, stem, formats=("md",))
    paths = [csv, md, tex]
    notes = (footnote + "\n\n" if footnote else "") + TABLE1_NOTES
    if "seeds" in df.columns:
        n = "/".join(sorted({s for s in df["seeds"] if s not in (DASH, NOT_RUN)}))
        rule = RANKING_RULE.format(alpha=alpha if alpha is not None else DEFAULT_ALPHA)
        notes += "\n" + SEEDS_NOTES.format(n=n, rule=rule)
    write_text_atomic(md, md.read_text(encoding="utf-8") + "\n" + notes)
    return paths


def seed_values(records: Sequence[dict[str, Any]], feature_name: str = "classifier") -> pd.DataFrame:
    """The per-seed values behind Table 1's cells, one row per record of our metric columns: label, model,
    class, metric, protocol, replicate (training seed or held-out draw), value, status."""
    wanted = {metric for _, metric, _, _ in _columns(feature_name)} | {"lpips", "msssim"}
    names = model_labels()
    rows = [
        {
            "label": names.get(r["model"], r["model"]),
            "model": r["model"],
            "class": r["class"],
            "metric": r["metric"],
            "protocol": r["protocol"],
            "replicate": replicate(r),
            "value": r.get("value"),
            "status": r.get("status"),
        }
        for r in records
        if r["metric"] in wanted
    ]
    return pd.DataFrame(
        rows, columns=["label", "model", "class", "metric", "protocol", "replicate", "value", "status"]
    )
