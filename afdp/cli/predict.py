"""``afdp similar``, ``afdp predict`` and ``afdp insights``: learning from verified history.

Thin: parse, call one function of :mod:`afdp.learn`, print (a rich table, or ``--json``).
Every number comes from deployments whose evidence verified against ``--trust``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from afdp.cli.output import console as _console
from afdp.cli.output import emit_json
from afdp.errors import UsageError


def _planned_options(function: Any) -> Any:
    options = [
        click.option("--change-size", type=click.FloatRange(min=0), help="Planned change size (lines changed)."),
        click.option("--changed-files", type=click.IntRange(min=0), help="Planned number of changed files."),
        click.option("--kinds", metavar="K1,K2", help="Planned change kinds, comma-separated: code, config, dependencies, docs, frontend, infrastructure, migration, other, test."),
        click.option("--at", "at", metavar="ISO", help="Planned deployment time, RFC 3339 with a zone (default: now)."),
        click.option("--environment", help="Planned environment (production, staging, ...)."),
        click.option("--load", type=float, help="The service's load when deploying (same unit as the history's load column)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _common(function: Any) -> Any:
    options = [
        click.option("--repo", "repository", required=True, type=click.Path(path_type=Path), help="Evidence Git repository."),
        click.option("--trust", required=True, type=click.Path(path_type=Path, dir_okay=False),
                     help="The auditor's trust policy: only deployments that verify against it are learned from."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _time(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"--at {text!r} is not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        raise UsageError(f"--at {text!r} needs a timezone (e.g. Z)")
    return moment


def _planned(options: dict[str, Any]) -> Any:
    from afdp.learn.features import Planned, parse_kinds

    return Planned.of(
        change_size=options["change_size"],
        changed_files=options["changed_files"],
        kinds=parse_kinds(options["kinds"]),
        at=_time(options["at"]),
        environment=options["environment"],
        load=options["load"],
    )


def _has_planned(options: dict[str, Any]) -> bool:
    return any(options[k] is not None for k in ("change_size", "changed_files", "kinds", "at", "environment", "load"))


@click.command("similar")
@_common
@click.option("--service", required=True, help="The service whose history is searched.")
@click.option("--deployment", help="A past deployment to find the like of.")
@click.option("--commit", help="A past deployment's commit (or a prefix of it).")
@_planned_options
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="How many neighbours.")
@click.option("--radius", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Distance within which a past deployment counts as the same pattern.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def similar_cmd(**options: Any) -> None:
    """List the past deployments most like a planned (or past) one, and why.

    Exit 0 with the neighbours; 2 for bad input; 3 when the evidence cannot be read.
    """
    from afdp.learn.similar import similar_deployments

    chosen = sum(x is not None for x in (options["deployment"], options["commit"])) + _has_planned(options)
    if chosen != 1:
        raise UsageError("give one of --deployment, --commit or planned characteristics (--change-size, --kinds, --at, ...)")
    planned = _planned(options) if _has_planned(options) else None
    if options["deployment"] is None:  # (a deployment named is looked up, and its absence said so)
        _require_service(options["repository"], options["service"])
    result = similar_deployments(
        options["repository"],
        options["trust"],
        service=options["service"],
        deployment=options["deployment"],
        commit=options["commit"],
        planned=planned,
        k=options["k"],
        radius=options["radius"],
    )
    if options["as_json"]:
        emit_json(result.to_json())
        return
    from rich.table import Table

    console = _console()
    console.print(f"{result.service}: {result.considered} verified deployments searched "
                  f"({result.excluded} excluded); query: {result.query_source}")
    table = Table("deployment", "distance", "deployed at", "degraded", "why similar")
    for n in result.neighbours:
        table.add_row(n.deployment + (" (imported)" if n.imported else ""), f"{n.distance:.3f}", str(n.row.get("deployed_at") or "-"),
                      {True: "yes", False: "no", None: "-"}[n.degraded], ", ".join(n.matched) or "-")
    console.print(table)
    console.print(result.sentence())


@click.command("predict")
@_common
@click.option("--service", required=True, help="The service to be deployed.")
@_planned_options
@click.option("--confidence", type=click.FloatRange(0.5, 0.99), default=0.9, show_default=True,
              help="Nominal coverage of the intervals.")
@click.option("--key", help="Sign and record the model on afdp/models/<service> with this key (file or key URI).")
@click.option("--public-key", type=click.Path(dir_okay=False), help="PEM public key; required with a key URI.")
@click.option("--tsa", multiple=True, metavar="URL", help="RFC3161 TSA URL for the model record (repeatable; default $AFDP_TSA_URLS).")
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
def predict_cmd(**options: Any) -> None:
    """Predict a planned deployment's impact, with conformal intervals, from verified history.

    Exit 0 with the prediction, or with "not enough history" when there is too little;
    1 when the recorded model does not verify, was not trained on this history or cannot
    be reproduced; 2 for bad input; 3 when the evidence cannot be read or the model cannot
    be recorded.
    """
    import os

    from afdp.learn.prediction import predict_impact

    signer = None
    tsa_urls: tuple[str, ...] = ()
    if options["key"]:
        from afdp.evidence.signing import load_signer

        signer = load_signer(options["key"], public_key=options["public_key"])
        tsa_urls = tuple(options["tsa"]) or tuple(os.environ.get("AFDP_TSA_URLS", "").split())
        if not tsa_urls:
            raise UsageError("--key records the model: it needs --tsa URL (or $AFDP_TSA_URLS)")
    prediction = predict_impact(
        options["repository"],
        options["trust"],
        service=options["service"],
        planned=_planned(options),
        confidence=options["confidence"],
        signer=signer,
        tsa_urls=tsa_urls,
    )
    document = prediction.to_json()
    if options["as_json"]:
        emit_json(document)
        return
    _print_prediction(document)


def _print_prediction(document: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    if document["status"] != "ok":
        console.print(f"{document['service']}: {document['reason']}; no prediction made")
        return
    level = document["confidence_level"]
    table = Table("metric", "expected increase (its unit)", f"{level:.0%} interval", f"coverage on past data (nominal {level:.0%})")
    quality = document.get("quality") or {}
    items = [(name, item) for name, item in document["impact"].items()]
    if document.get("money_lost_per_hour"):
        items.append(("money lost per hour", document["money_lost_per_hour"]))
    for name, item in items:
        q = quality.get(item["target"]) or {}
        cover = f"{q['empirical']:.0%} of {q['n']}" if q.get("empirical") is not None else "-"
        table.add_row(name, f"{item['point']:+.4g}", f"[{item['low']:+.4g}, {item['high']:+.4g}]", cover)
    console.print(table)
    model = document["model"]
    console.print(
        f"model: {model['record'] or 'not recorded'} ({model['note']}); dataset sha256 {model['dataset_digest']}; "
        f"{model['history_rows']} verified deployments"
    )
    similar = document.get("similar") or {}
    if similar:
        console.print(similar["pattern"]["sentence"])
        for n in similar["neighbours"]:
            console.print(f"  {n['deployment']}{' (imported)' if n['imported'] else ''}  distance {n['distance']:.3f}  "
                          f"degraded={n['degraded']}  {', '.join(n['matched'])}")


@click.command("insights")
@_common
@click.option("--service", help="Only this service (default: every service).")
@click.option("--html", "html_out", type=click.Path(path_type=Path, dir_okay=False), help="Also write an HTML page with plots.")
@click.option("--json", "as_json", is_flag=True, help="Print the insights as JSON.")
def insights_cmd(**options: Any) -> None:
    """Report patterns learned from verified deployment history, with support and strength.

    Exit 0; 2 for bad input; 3 when the evidence cannot be read or the page cannot be written.
    """
    from afdp.learn.insights import insights_of, render_html

    if options["service"] is not None:
        _require_service(options["repository"], options["service"])
    found = insights_of(options["repository"], options["trust"], service=options["service"])
    if options["html_out"]:
        from afdp.errors import StorageError

        try:
            options["html_out"].write_text(render_html(found), encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot write {options['html_out']}: {exc.strerror or exc}") from exc
    if options["as_json"]:
        emit_json(found.to_json())
        return
    from rich.table import Table

    console = _console()
    console.print(f"{found.rows} verified deployments ({found.excluded} excluded); dataset sha256 {found.dataset_digest}")
    table = Table("dimension", "group", "outcome", "n (group/rest)", "group", "rest", "difference [95% CI]", "p", "")
    for item in found.insights:
        if item.status != "computed":
            continue
        assert item.difference is not None and item.p_value is not None
        ci = f" [{item.interval[0]:+.3g}, {item.interval[1]:+.3g}]" if item.interval else ""
        table.add_row(item.dimension, item.group, item.outcome, f"{item.support}/{item.rest}",
                      f"{item.group_value:.4g}", f"{item.rest_value:.4g}", f"{item.difference:+.4g}{ci}",
                      f"{item.p_value:.3g}", "notable" if item.notable else "")
    console.print(table)
    for name, figure in found.correlations.items():
        console.print(f"correlation {name}: {figure.get('status')} ({figure.get('deployments')} deployments)")
    for note in found.notes:
        console.print(note)
    if options["html_out"]:
        console.print(f"wrote {options['html_out']}")


def _require_service(repository: Path, service: str) -> None:
    """A service with no evidence branch at all in the repository is a mistake (a typo),
    not "0 deployments": exit 2 naming the services there, as ``afdp report`` does.

    Raises:
        NotFoundError: no branch ``afdp/<service>/...`` (a model branch does not count).
        UsageError: ``service`` is not a service name.
    """
    from afdp.errors import NotFoundError
    from afdp.evidence.names import MODELS_SERVICE, check_name
    from afdp.evidence.store import EvidenceStore

    check_name(service, what="service")
    services = sorted({s for s, _ in EvidenceStore(repository).branches() if s != MODELS_SERVICE})
    if service not in services:
        known = f"; services there: {', '.join(services[:20])}" if services else "; it holds no deployment branch"
        raise NotFoundError(f"no evidence branch of service {service} in {repository}{known}")
