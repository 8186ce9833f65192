"""Table 1 from hand-written records: the paper's numbers and order, our values, missing weights, sample sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medsg_lib.evaluate import REAL_BASELINE_MODEL
from medsg_lib.metrics.frd import FRD_PROTOCOL
from medsg_lib.metrics.weights import weights_label
from medsg_lib.paths import project_root
from medsg_lib.table1 import PAPER_TABLE1, build_table1, family_rows, write_table1
from medsg_lib.table_cells import cell, fmt_plain, fmt_value_ci


def paper_table_in_docs() -> list[tuple[str, str, str]]:
    """(model, FID, LPIPS) of the paper's Table 1 as docs/paper.md transcribes it ("-" becomes "—"): a source
    written apart from the code's :data:`PAPER_TABLE1`."""
    text = (project_root() / "docs" / "paper.md").read_text(encoding="utf-8")
    block = text[text.index("## Table 1 of the paper") :].split("\n\n")[2]  # heading, sentence, table
    rows = [line.strip("|").split("|") for line in block.splitlines()[2:]]
    return [tuple(c.strip().replace("-", "—") if c.strip() == "-" else c.strip() for c in r) for r in rows]


PAPER_DOC = paper_table_in_docs()
PAPER_ORDER = [m for m, _, _ in PAPER_DOC]
PAPER_FID = [f for _, f, _ in PAPER_DOC]
PAPER_LPIPS = [lp for _, _, lp in PAPER_DOC]


def rec(
    model: str, cls: str, metric: str, protocol: str, value: float | None, **extra: Any
) -> dict[str, Any]:
    return {
        "metric": metric,
        "protocol": protocol,
        "feature_net": "net",
        "weights": "w",
        "class": cls,
        "model": model,
        "checkpoint": "ckpt",
        "n_real": 120,
        "n_fake": 160,
        "seed": 0,
        "value": value,
        "status": "ok",
        **extra,
    }


def missing(model: str, cls: str, metric: str, protocol: str, file_name: str) -> dict[str, Any]:
    return rec(model, cls, metric, protocol, None, status=f"missing weights: {file_name}")


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return [
        rec("medsg", "Normal", "fid", "pytorch-fid", 70.0),  # superseded by the later record below
        rec("medsg", "Normal", "fid", "pytorch-fid", 61.23456, ci_low=58.1, ci_high=65.0),
        missing("medsg", "Normal", "fid", "paper", "inception_v3_google-0cc3c7bd.pth"),
        missing("medsg", "Normal", "kid", "paper", "inception_v3_google-0cc3c7bd.pth"),
        rec("medsg", "Normal", "kid", "pytorch-fid", 0.0123, std=0.0004),
        rec("medsg", "Normal", "fd_classifier", "domain:classifier", 1.5),
        rec("medsg", "Normal", "kid_classifier", "domain:classifier", 0.002, std=0.001),
        rec("medsg", "Normal", "precision", "domain:classifier", 0.75),
        rec("medsg", "Normal", "recall", "domain:classifier", 0.5),
        rec("medsg", "Normal", "lpips", "lpips-alex-v0.1: groups", 0.21, n_real=0),
        rec("medsg", "Normal", "frd", FRD_PROTOCOL, 3.14159),
        rec("medsg", "Normal", "msssim", "ms-ssim: groups", 0.4321, n_real=0),
        missing("gan", "all", "fid", "pytorch-fid", "pt_inception-2015-12-05-6726825d.pth"),
        missing("gan", "all", "lpips", "lpips-alex-v0.1: pairs", "alexnet-owt-7be5be79.pth"),
        rec("dcgan", "COVID-19", "fd_classifier", "domain:classifier", 3.0, n_real=40, n_fake=50),
        rec(
            "real (train vs held-out)",
            "Normal",
            "fd_classifier",
            "domain:classifier",
            0.25,
            n_real=200,
            n_fake=32,
        ),
        rec("real (train vs held-out)", "Normal", "msssim", "ms-ssim: pairs", 0.25, n_real=0, n_fake=32),
        rec("medsg", "all", "fd_classifier", "domain:classifier", 9.0),  # a combination Table 1 does not name
    ]


def row(df: pd.DataFrame, model: str) -> pd.Series:
    (index,) = df.index[df["model"] == model]
    return df.loc[index]


def test_paper_rows_values_and_order(records: list[dict[str, Any]]) -> None:
    df = build_table1(records)
    assert len(PAPER_ORDER) == 9 and PAPER_FID[0] == "2446.535" and PAPER_LPIPS[-1] == "0.514"
    assert list(df["model"][:9]) == PAPER_ORDER
    assert list(df["FID paper"][:9]) == PAPER_FID
    assert list(df["LPIPS paper"][:9]) == PAPER_LPIPS
    assert [r.label for r in PAPER_TABLE1] == PAPER_ORDER
    assert list(df["source"][:9]) == [
        "paper",
        "paper",
        "literature, quoted",
        "paper",
        "literature, quoted",
    ] + [
        "paper",
        "paper",
        "literature, quoted",
        "literature, quoted",
    ]


def test_our_values_missing_weights_and_sample_sizes(records: list[dict[str, Any]]) -> None:
    df = build_table1(records)
    normal = row(df, "Med-StyleGAN2 (Normal)")
    assert normal["FID (pytorch-fid) [95% CI]"] == "61.235 [58.100, 65.000]"  # the last record wins
    assert normal["FID (paper protocol)"] == "missing weights (inception_v3_google-0cc3c7bd.pth)"
    assert normal["KID x1e3 (pytorch-fid)"] == "12.300 ± 0.400"
    assert normal["FD (classifier) [95% CI]"] == "1.500"
    assert normal["KID x1e3 (classifier)"] == "2.000 ± 1.000"
    assert (normal["precision (classifier)"], normal["recall (classifier)"]) == ("0.750", "0.500")
    assert normal["LPIPS (ours)"] == "0.210"
    assert (normal["FRD (radiomics)"], normal["MS-SSIM (lower = more diverse)"]) == ("3.142", "0.432")
    assert row(df, "GAN")["MS-SSIM (lower = more diverse)"] == "not run"
    assert (normal["n_real"], normal["n_fake"]) == ("120", "160")
    gan = row(df, "GAN")
    assert gan["FID (pytorch-fid) [95% CI]"] == "missing weights (pt_inception-2015-12-05-6726825d.pth)"
    assert gan["LPIPS (ours)"] == "missing weights (alexnet-owt-7be5be79.pth)"
    assert gan["FD (classifier) [95% CI]"] == "not run"
    assert row(df, "Med-StyleGAN2 (COVID-19)")["FID (pytorch-fid) [95% CI]"] == "not run"
    literature = row(df, "StarGAN (literature)")
    assert set(literature.drop(["model", "source", "FID paper", "LPIPS paper"])) == {"—"}


def test_extra_rows_only_with_records(records: list[dict[str, Any]]) -> None:
    df = build_table1(records)
    # registry order (Med-StyleGAN2 before DCGAN), then the real floor
    assert list(df["model"][9:]) == [
        "Med-StyleGAN2 (all)",
        "DCGAN (COVID-19)",
        "Real train vs real held-out (Normal)",
    ]
    assert set(df["source"][9:]) == {"ours"}
    dcgan = row(df, "DCGAN (COVID-19)")
    assert (dcgan["FID paper"], dcgan["FD (classifier) [95% CI]"]) == ("—", "3.000")
    assert (dcgan["n_real"], dcgan["n_fake"]) == ("40", "50")
    floor = row(df, "Real train vs real held-out (Normal)")
    assert (floor["n_real"], floor["n_fake"], floor["LPIPS (ours)"]) == ("200", "32", "—")
    assert floor["MS-SSIM (lower = more diverse)"] == "0.250"  # the real images' own similarity: the floor
    assert len(build_table1([])) == 9
    assert (build_table1([]).map(lambda v: isinstance(v, str))).all().all()  # strings, no NaN


def test_write_table1(records: list[dict[str, Any]], tmp_path: Path) -> None:
    paths = write_table1(build_table1(records), tmp_path / "results")
    assert sorted(p.name for p in paths) == ["table1.csv", "table1.md", "table1.tex"]
    back = pd.read_csv(tmp_path / "results" / "table1.csv", dtype=str, keep_default_na=False)
    assert list(back["FID paper"][:9]) == PAPER_FID
    md = (tmp_path / "results" / "table1.md").read_text()
    assert "| Med-StyleGAN2 (Normal)" in md and "Notes." in md
    header = md.splitlines()[0]
    # a column where no row has a value for want of weights is left out of the markdown and named below it ...
    assert "FID (paper protocol)" not in header and "FID (paper protocol)" in back.columns
    assert "FID (paper protocol) (missing weights (inception_v3_google-0cc3c7bd.pth))" in md
    # ... a column with some values keeps its cells, the missing ones short, the file in the footnote
    assert "LPIPS (ours)" in header and "| no weights" in md
    assert '"no weights": the pretrained file was not available offline: FID (pytorch-fid)' in md
    assert "; LPIPS (ours) (alexnet-owt-7be5be79.pth)." in md
    assert not any("missing weights" in line for line in md.splitlines() if line.startswith("|"))
    tex = (tmp_path / "results" / "table1.tex").read_text()
    assert "\\begin{tabular}" in tex and "2446.535" in tex and "95\\% CI" in tex


def test_unverified_weights_never_show_a_number(records: list[dict[str, Any]]) -> None:
    """A record computed with random weights (MetricsConfig.allow_random_weights) carries a weights label
    that says UNVERIFIED: its cell names the label instead of the number."""
    random_label = f"{weights_label('pt_inception', None)}, seed 0"  # as features.load_weights labels it
    assert cell(
        rec("medsg", "Normal", "fid", "pytorch-fid", 61.2, weights="ok sha256:1 (verified)"), fmt_plain
    ) == ("61.200")
    random_fid = rec(
        "medsg", "Normal", "fid", "pytorch-fid", 61.2, weights=random_label, ci_low=1.0, ci_high=2.0
    )
    assert cell(random_fid, fmt_value_ci) == (
        "unverified weights: pt_inception random init (UNVERIFIED random weights), seed 0"
    )
    random_lpips = rec(
        "gan",
        "all",
        "lpips",
        "lpips-alex-v0.1: pairs",
        0.3,
        weights=f"{weights_label('alexnet', None)}, seed 0",
    )
    df = build_table1([*records, random_fid, random_lpips])
    normal, gan = row(df, "Med-StyleGAN2 (Normal)"), row(df, "GAN")
    assert normal["FID (pytorch-fid) [95% CI]"].startswith("unverified weights: pt_inception random init")
    assert "61.2" not in normal["FID (pytorch-fid) [95% CI]"]
    assert (
        gan["LPIPS (ours)"] == "unverified weights: alexnet random init (UNVERIFIED random weights), seed 0"
    )
    assert normal["KID x1e3 (pytorch-fid)"] == "12.300 ± 0.400"  # verified records keep their numbers


def test_family_rows_are_labelled_by_the_registry() -> None:
    labels = [label for label, _ in family_rows("dcgan")]
    assert labels == ["DCGAN (all)", "DCGAN (COVID-19)", "DCGAN (Non-COVID)", "DCGAN (Normal)"]
    assert family_rows(REAL_BASELINE_MODEL)[1] == (
        "Real train vs real held-out (COVID-19)",
        (REAL_BASELINE_MODEL, "COVID-19"),
    )


def test_our_rows_of_a_quoted_model_follow_its_literature_row() -> None:
    """StarGAN is quoted by the paper (LPIPS 0.212, other data): our StarGAN rows come right below the quote,
    with the quoted LPIPS beside our numbers; SDGAN, which no family reproduces, stays a quote alone."""
    records = [
        rec("stargan", c, "fd_classifier", "domain:classifier", v, n_real=40, n_fake=64)
        for c, v in (("Normal", 5.0), ("COVID-19", 7.0))
    ]
    df = build_table1(records)
    models = list(df["model"])
    at = models.index("StarGAN (literature)")
    assert models[at + 1 : at + 3] == ["StarGAN (COVID-19)", "StarGAN (Normal)"]
    ours = row(df, "StarGAN (Normal)")
    assert (ours["LPIPS paper"], ours["FD (classifier) [95% CI]"]) == ("0.212", "5.000")
    assert ours["source"] == "ours (LPIPS paper: literature, quoted)"
    assert models[-1] == "SDGAN (literature)" and len(models) == 11
