"""``bmdpipe stats``: ROC, logistic regression, group comparison, ICC, the trial report and a
synthetic cohort. Thin: parse, call the library, print; heavy imports inside the commands.

Exit status 0 on success, 2 for a usage error or input that cannot be analysed (the message
names the file or database and the column).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from .direction import Direction

app = typer.Typer(name="stats", help="Trial statistics from a CSV table or the bmdpipe database.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

EXIT_USAGE = 2

DataFile = Annotated[Optional[Path], typer.Option(
    "--data", help="CSV table, one row per patient (or per screw, reading ...).", exists=True, dir_okay=False)]
DbUrl = Annotated[Optional[str], typer.Option(
    "--db", help="bmdpipe database URL (sqlite:///PATH or postgresql+psycopg://...): its patient table, with "
    "columns study_id, arm, cement (1/0), cage_type, vbmd_a, vbmd_b, vbmd_c, qct_vbmd_a, qct_category, loosened "
    "(1/0, at stats.primary_timepoint).")]
Outcome = Annotated[str, typer.Option(help="Binary outcome column (true/false, yes/no, 1/0).")]
Config = Annotated[Optional[Path], typer.Option(
    help="Settings YAML overriding configs/default.yaml (section stats).", exists=True, dir_okay=False)]


#: modules the commands need, from the ``stats`` extra
_NEEDED = ("sklearn", "statsmodels", "pingouin")


@app.callback()
def _check_installed() -> None:
    """Trial statistics from a CSV table or the bmdpipe database (needs the ``stats`` extra)."""
    from importlib.util import find_spec

    missing = [m for m in _NEEDED if find_spec(m) is None]
    if missing:
        _fail(f"bmdpipe stats needs {', '.join(missing)}: pip install 'bmdpipe[stats]'")


def _one_source(data: Path | None, db: str | None) -> None:
    """Exactly one of --data and --db (a usage error otherwise)."""
    if (data is None) == (db is None):
        raise typer.BadParameter("give exactly one of --data FILE.csv and --db URL")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USAGE)


@contextmanager
def _errors_as_usage():
    """A statistics or store error (bad input) ends the command with its message, exit 2."""
    from ..errors import StatsError, StoreError

    try:
        yield
    except (StatsError, StoreError) as exc:
        _fail(str(exc))


def _settings(config: Path | None):
    from ..config import load_settings
    from ..errors import ConfigError

    try:
        return load_settings(config).stats
    except ConfigError as exc:
        _fail(str(exc))


def _shown_url(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def _trial(db: str, settings):
    from ..store.db import open_db
    from .data import load_trial

    engine = open_db(db)
    try:
        return load_trial(engine, settings)
    finally:
        engine.dispose()


def _table(data: Path | None, db: str | None, settings) -> tuple:
    """The table to analyse and its name for messages."""
    from .data import read_table

    _one_source(data, db)
    if data is not None:
        return read_table(data), f"data file {data}"
    return _trial(db, settings).patients, f"the patient table of database {_shown_url(db)}"


@app.command()
def roc(
    predictor: Annotated[str, typer.Option(help="Numeric predictor column, e.g. vbmd_c (mg/cm3).")],
    outcome: Outcome,
    data: DataFile = None,
    db: DbUrl = None,
    direction: Annotated[Direction, typer.Option(
        help="Which values predict the outcome: lower (density and loosening), higher, or auto (from the group "
        "medians).")] = Direction.auto,
    compare: Annotated[Optional[str], typer.Option(
        help="A second predictor column: DeLong test of the two correlated AUCs (predictor vs this one).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON here.")] = None,
    png: Annotated[Optional[Path], typer.Option(help="Write the ROC curve (PNG) here.")] = None,
    config: Config = None,
) -> None:
    """AUC with DeLong CI, Youden cut-off with sensitivity and specificity, and the ROC curve.

    JSON keys: auc, auc_ci_low, auc_ci_high, cutoff, sensitivity, specificity, direction,
    n_positive, n_negative (and, with --compare, compare: the DeLong test).
    """
    from .data import analysis_rows
    from .roc import compare_aucs, roc_analysis

    settings = _settings(config)
    with _errors_as_usage():
        frame, source = _table(data, db, settings)
        rows = analysis_rows(frame, outcome, [predictor] + ([compare] if compare else []), source)
    try:
        result = roc_analysis(rows[outcome], rows[predictor], direction=direction, ci_level=settings.ci_level)
    except ValueError as exc:  # fewer than 2 cases in an outcome class
        _fail(f"{source}, column {outcome!r}: {exc}")
    summary = result.summary()
    typer.echo(f"{predictor} for {outcome}: AUC {result.auc:.3f} ({100 * settings.ci_level:.0f} % CI "
               f"{result.auc_ci_low:.3f}-{result.auc_ci_high:.3f}, DeLong), n = {result.n_positive} positive + "
               f"{result.n_negative} negative")
    rule = "<=" if result.direction is Direction.lower else ">="
    typer.echo(f"Youden cut-off: {outcome} predicted when {predictor} {rule} {result.cutoff:.4g} "
               f"(sensitivity {result.sensitivity:.3f}, specificity {result.specificity:.3f})")
    if compare:
        c = compare_aucs(rows[outcome], rows[predictor], rows[compare], direction=direction,
                         ci_level=settings.ci_level)
        summary["compare"] = {"predictor": compare, "auc": c.auc_2, "difference": c.difference,
                              "ci_low": c.ci_low, "ci_high": c.ci_high, "z": c.z, "p_value": c.p_value}
        typer.echo(f"DeLong test {predictor} vs {compare}: AUC {c.auc_1:.3f} vs {c.auc_2:.3f}, difference "
                   f"{c.difference:+.3f} (CI {c.ci_low:+.3f} to {c.ci_high:+.3f}), z = {c.z:.2f}, p = {c.p_value:.4f}")
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    if png:
        from .figures import roc_figure

        png.write_bytes(roc_figure({predictor: result}))


def _print_table(frame, csv_out: Path | None) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        typer.echo(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if csv_out:
        frame.to_csv(csv_out, index=False)


CsvOut = Annotated[Optional[Path], typer.Option("--csv", help="Also write the table as CSV here.")]


@app.command()
def logistic(
    outcome: Outcome,
    predictor: Annotated[list[str], typer.Option(help="Predictor column (repeat the option for several).")],
    data: DataFile = None,
    db: DbUrl = None,
    csv_out: CsvOut = None,
    config: Config = None,
) -> None:
    """Odds ratios with Wald CIs and p per predictor: univariate, and multivariable (all predictors)."""
    from .data import analysis_rows
    from .regression import FitError, logistic_odds_ratios, odds_ratio_table

    settings = _settings(config)
    with _errors_as_usage():
        frame, source = _table(data, db, settings)
        table = analysis_rows(frame, outcome, predictor, source, complete=False)
        try:
            ratios = logistic_odds_ratios(table, outcome, predictor, ci_level=settings.ci_level)
        except FitError as exc:
            _fail(f"{source}: {exc}")
    _print_table(odds_ratio_table(ratios), csv_out)


@app.command("compare")
def compare_cmd(
    group: Annotated[str, typer.Option(help="Column with the two groups (e.g. loosened).")],
    variable: Annotated[list[str], typer.Option(help="Variable column (repeat for several); numeric = "
                                                "continuous, text or true/false = categorical.")],
    data: DataFile = None,
    db: DbUrl = None,
    csv_out: CsvOut = None,
    config: Config = None,
) -> None:
    """A two-group table (Table 1): t-test or Mann-Whitney U by Shapiro-Wilk; chi-square or Fisher."""
    from .data import require_column
    from .groups import compare_groups, group_table

    settings = _settings(config)
    with _errors_as_usage():
        frame, source = _table(data, db, settings)
        for col in (group, *variable):
            require_column(frame, col, source)
        try:
            labels, rows = compare_groups(frame, group, variable, normality_alpha=settings.normality_alpha,
                                          min_expected_count=settings.min_expected_count)
        except ValueError as exc:
            _fail(f"{source}: {exc}")
    _print_table(group_table(labels, rows), csv_out)


@app.command()
def icc(
    data: Annotated[Path, typer.Option("--data", help="CSV in long format: one row per target x reader.",
                                       exists=True, dir_okay=False)],
    value: Annotated[str, typer.Option(help="Numeric column rated, e.g. vbmd_mg_cm3.")],
    target: Annotated[list[str], typer.Option(help="Column(s) that identify a target (repeat: e.g. study_id, "
                                              "vertebra, region, side).")],
    reviewer: Annotated[str, typer.Option(help="Column naming the reader.")] = "reviewer",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON here.")] = None,
) -> None:
    """ICC, two-way random, absolute agreement: single and average measures with 95 % CIs."""
    import dataclasses

    from .data import numeric_column, read_table, require_column
    from .icc import intraclass_correlation

    with _errors_as_usage():
        frame = read_table(data)
        source = f"data file {data}"
        values = numeric_column(frame, value, source)
        for col in (*target, reviewer):
            require_column(frame, col, source)
    key = frame[target].astype(str).agg("|".join, axis=1)
    long = frame.assign(_target=key, _value=values)
    try:
        result = intraclass_correlation(long, "_target", reviewer, "_value")
    except ValueError as exc:
        _fail(f"{source}: {exc}")
    typer.echo(f"{result.n_targets} targets x {result.n_readers} readers ({result.n_dropped} targets not rated "
               "by every reader left out)")
    typer.echo(f"ICC(2,1) single  {result.single:.3f}  95 % CI {result.single_ci_low:.2f}-{result.single_ci_high:.2f}")
    typer.echo(f"ICC(2,k) average {result.average:.3f}  95 % CI {result.average_ci_low:.2f}-"
               f"{result.average_ci_high:.2f}")
    if json_out:
        json_out.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")


@app.command()
def report(
    db: Annotated[str, typer.Option("--db", help="bmdpipe database URL.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (self-contained).")],
    config: Config = None,
) -> None:
    """The trial report (HTML): endpoints by arm, ODI and VAS, vBMD vs loosening (Tables 1-3, ROC), QCT."""
    from .report import trial_report

    settings = _settings(config)
    with _errors_as_usage():
        data = _trial(db, settings)
    rep = trial_report(data, settings, source=_shown_url(db))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rep.html("bmdpipe trial report"), encoding="utf-8")
    typer.echo(f"{out}: {len(data.patients)} studies, {len(rep.figures)} figures")


@app.command()
def cohort(
    db: Annotated[str, typer.Option("--db", help="Database URL to write the cohort into (use a new one).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    n_loose: Annotated[int, typer.Option(min=2, help="Patients with loosening at month_12.")] = 63,
    n_stable: Annotated[int, typer.Option(min=2, help="Patients without.")] = 123,
    csv_out: Annotated[Optional[Path], typer.Option(
        "--csv", help="Also write the patient table (with DXA hip T-scores) as CSV here.")] = None,
) -> None:
    """Write a synthetic trial cohort (Table-1-shaped by default) into a database, for the report."""
    from ..store.db import open_db
    from .cohort import CohortSpec, synthetic_cohort
    from .data import write_cohort

    made = synthetic_cohort(CohortSpec(n_loose=n_loose, n_stable=n_stable), seed=seed)
    with _errors_as_usage():
        engine = open_db(db)
        try:
            n = write_cohort(engine, made)
        finally:
            engine.dispose()
    if csv_out:
        made.patients.to_csv(csv_out, index=False)
    typer.echo(f"{n} synthetic patients written to {_shown_url(db)}")
