"""Training datasets from verified evidence: Parquet, CSV or JSON Lines, with a datasheet.

:func:`export_dataset` loads the history (:func:`afdp.learn.history.load_history`: every
branch verified against the trust policy, unverifiable ones left out and counted) and
writes its rows, then ``<out>.datasheet.json`` beside them: the schema (column, type,
meaning), the counts (considered, used, excluded by reason), every branch left out and
why, what is missing (columns that are null, and why), the digest of every record used
and the dataset digest.

The same repository gives the same bytes: no wall-clock time is written, the columns
have one order (:func:`afdp.learn.history.column_names`), rows are sorted, and Parquet is
written through pyarrow with an explicit schema and fixed writer options.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from afdp.errors import NotFoundError, StorageError, UsageError
from afdp.evidence.canonical import sha256_hex
from afdp.learn.history import (
    History,
    ProgressCallback,
    column_schema,
    load_history,
)

__all__ = [
    "DATASHEET_SCHEMA",
    "FORMATS",
    "DatasetExport",
    "arrow_schema",
    "datasheet",
    "encode_rows",
    "export_dataset",
    "read_dataset",
]

FORMATS = ("parquet", "csv", "jsonl")
#: The format an output file's suffix implies when none is given.
SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DATASHEET_SCHEMA = "afdp-datasheet.v1"
DATASHEET_SUFFIX = ".datasheet.json"

#: Why a column can be null, for the datasheet's "missing" section.
_NULL_WHY: dict[str, str] = {
    "team": "the deployment's team was not recorded (afdp run --team, an event's team; evidence written before teams were recorded has none)",
    "environment": "the deployment's environment was not recorded",
    "version": "the deployment's version was not recorded",
    "commit": "the deployment's commit was not recorded",
    "deployed_at": "no deployment time was recorded (no mark_deployment_time, deployed_at or signal)",
    "hour_utc": "no deployment time was recorded",
    "weekday_utc": "no deployment time was recorded",
    "weekday_name": "no deployment time was recorded",
    "change_size": "deployment_size was not captured",
    "changed_files_count": "changed_files was not captured",
    "decision": "no decision rule matched (the default applied) or no decision was recorded",
    "label": "no training label was recorded",
    "money_per_hour": "no metric in money per time (a unit such as $/hour) was analyzed, or several currencies were",
}
_IMPACT_WHY = "the metric was not analyzed in this deployment, or the analysis could not compute it (its record gives the reason)"
_CONTEXT_WHY = "the business context metric was not measured in this deployment"


@dataclass(frozen=True)
class DatasetExport:
    """What :func:`export_dataset` wrote."""

    path: Path
    datasheet_path: Path
    format: str
    history: History
    datasheet: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "datasheet": str(self.datasheet_path),
            "format": self.format,
            "digest": self.history.digest,
            "considered": self.history.considered,
            "used": len(self.history.rows),
            "excluded": len(self.history.excluded),
            "excluded_by_reason": self.history.excluded_by_reason(),
        }


def export_dataset(
    repo: str | Path,
    trust_policy: str | Path,
    *,
    fmt: str | None,
    out: str | Path,
    services: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    labels: Sequence[str] | None = None,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> DatasetExport:
    """Verify the repository's deployment branches and write the dataset and its datasheet.

    ``fmt``: parquet, csv or jsonl; None takes it from ``out``'s suffix.

    Returns:
        The :class:`DatasetExport` (paths, the history, the datasheet).

    Raises:
        UsageError: an unknown format, an output path that is a directory, bad filters.
        NotFoundError: no evidence repository, or no AFDP branch to consider.
        ConfigurationError: the trust policy does not load.
        StorageError: the files cannot be written.
    """
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file name")
    if fmt is None:
        fmt = SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise UsageError(f"--out {path.name!r} has no known suffix (.parquet, .csv, .jsonl): pass --format")
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    history = load_history(
        repo,
        trust_policy,
        services=services,
        since=since,
        until=until,
        labels=labels,
        jobs=jobs,
        progress=progress,
    )
    if history.considered == 0:
        what = f" of {', '.join(services)}" if services else ""
        raise NotFoundError(f"no AFDP evidence branches{what} in {repo}")
    data = encode_rows(history.rows, history.columns, fmt, digest=history.digest)
    sheet = datasheet(
        history,
        fmt=fmt,
        file_name=path.name,
        file_sha256=sha256_hex(data),
        trust_sha256=_file_sha256(Path(trust_policy)),
        filters={
            "services": sorted(services) if services else None,
            "since": _iso(since),
            "until": _iso(until),
            "labels": sorted(labels) if labels else None,
        },
    )
    sheet_path = path.with_name(path.name + DATASHEET_SUFFIX)
    sheet_bytes = (json.dumps(sheet, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()
    _write_atomic(path, data)
    _write_atomic(sheet_path, sheet_bytes)
    return DatasetExport(path, sheet_path, fmt, history, sheet)


def datasheet(
    history: History,
    *,
    fmt: str,
    file_name: str,
    file_sha256: str,
    trust_sha256: str | None,
    filters: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the datasheet of a dataset (deterministic: no wall-clock time)."""
    from afdp import __version__

    columns = history.columns
    missing = []
    for name in columns:
        nulls = sum(1 for row in history.rows if row.get(name) is None)
        if not nulls:
            continue
        if name.startswith("impact."):
            why = _IMPACT_WHY
        elif name.startswith("context."):
            why = _CONTEXT_WHY
        else:
            why = _NULL_WHY.get(name, "not recorded in the evidence")
        missing.append({"column": name, "null_rows": nulls, "why": why})
    return {
        "schema": DATASHEET_SCHEMA,
        "generator": f"afdp {__version__}",
        "dataset": {
            "file": file_name,
            "format": fmt,
            "file_sha256": file_sha256,
            "digest": history.digest,
            "digest_of": "SHA-256 of the RFC 8785 canonical JSON of the rows (a list of objects, columns as listed)",
            "rows": len(history.rows),
            "order": "deployed_at, service, deployment",
            **({"csv_text_cells": CSV_NOTE} if fmt == "csv" else {}),
        },
        "source": {
            "trust_policy_sha256": trust_sha256,
            "filters": dict(filters),
            "rule": "only branches that verified against the trust policy (sealed, every check passed) and hold a training record are used",
        },
        "columns": column_schema(columns),
        "counts": {
            "considered": history.considered,
            "used": len(history.rows),
            "excluded": len(history.excluded),
            "excluded_by_reason": history.excluded_by_reason(),
        },
        "excluded": [{"branch": e.branch, "reason": e.reason} for e in history.excluded],
        "missing": missing,
        "record_digests": history.record_digests(),
    }


# -- encodings -------------------------------------------------------------------------------
def _type_of(columns: Sequence[str]) -> dict[str, str]:
    return {item["column"]: item["type"] for item in column_schema(columns)}


def arrow_schema(columns: Sequence[str], *, digest: str | None = None) -> Any:
    """Return the explicit pyarrow schema of the columns (types from the datasheet)."""
    import pyarrow as pa

    kinds = {
        "string": pa.string(),
        "integer": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
        "list<string>": pa.list_(pa.string()),
    }
    fields = []
    for name, kind in _type_of(columns).items():
        base = kind.split("|")[0]
        fields.append(pa.field(name, kinds[base], nullable=kind.endswith("|null")))
    metadata = {b"afdp_dataset_digest": digest.encode()} if digest else None
    return pa.schema(fields, metadata=metadata)


def encode_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, *, digest: str | None = None) -> bytes:
    """Return the bytes of ``rows`` in ``fmt`` (deterministic for the same rows)."""
    if fmt == "jsonl":
        lines = [
            json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            for row in rows
        ]
        return "".join(line + "\n" for line in lines).encode()
    if fmt == "csv":
        kinds = _type_of(columns)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([_csv_text(c) for c in columns])
        for row in rows:
            writer.writerow([_csv_cell(row.get(c), kinds[c]) for c in columns])
        return buffer.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns, digest=digest)
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows], schema=schema)
    sink = pa.BufferOutputStream()
    # Fixed options: the same rows give the same bytes with the same pyarrow (its version
    # is the file's created_by, and is in the datasheet's generator line via the file).
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        version="2.6",
        data_page_version="1.0",
        store_schema=True,
        row_group_size=64 * 1024,
    )
    return bytes(sink.getvalue().to_pybytes())


#: A spreadsheet reads a cell that starts with one of these as a formula (OWASP, "CSV
#: Injection"; ASVS 1.2.10 adds NUL). Text cells that start with one, or with the quote
#: itself, are written with a leading single quote.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")
CSV_ESCAPE = "'"
CSV_NOTE = (
    "a text cell (a string column) that starts with = + - @ TAB CR LF NUL or ' is written with one "
    "leading ' so that no spreadsheet runs it as a formula (OWASP CSV Injection); read_dataset, and "
    "anyone reading the file, drops that one leading '. Numbers, booleans and lists are written as "
    "they are; Parquet and JSON Lines keep every value raw"
)


def _csv_text(text: str) -> str:
    """Text as a CSV cell that no spreadsheet runs: a leading ``'`` before a formula start
    (and before a leading ``'``, so reading back is exact)."""
    if text.startswith(CSV_FORMULA_STARTS) or text.startswith(CSV_ESCAPE):
        return CSV_ESCAPE + text
    return text


def _csv_cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # a number stays a number, "-0.5" included
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # starts with "["
    if kind.split("|")[0] == "string":
        return _csv_text(str(value))
    return str(value)


def read_dataset(path: str | Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Read a dataset written by :func:`export_dataset` back into rows (typed by its datasheet
    for CSV). ``fmt`` defaults to the datasheet's format.

    Raises:
        UsageError: the file or its datasheet is missing or unreadable.
    """
    path = Path(path)
    sheet_path = path.with_name(path.name + DATASHEET_SUFFIX)
    try:
        sheet = json.loads(sheet_path.read_text())
        fmt = fmt or sheet["dataset"]["format"]
        kinds = {c["column"]: c["type"] for c in sheet["columns"]}
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_table(path).to_pylist())
        text = path.read_text()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read dataset {path}: {exc}") from exc
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line]
    reader = csv.reader(io.StringIO(text))
    header = [_csv_unescape(name) for name in next(reader)]
    return [{name: _csv_value(cell, kinds[name]) for name, cell in zip(header, cells, strict=True)} for cells in reader]


def _csv_unescape(cell: str) -> str:
    return cell[1:] if cell.startswith(CSV_ESCAPE) else cell


def _csv_value(cell: str, kind: str) -> Any:
    base = kind.split("|")[0]
    if cell == "" and base != "list<string>":
        return None
    if base == "integer":
        return int(cell)
    if base == "number":
        return float(cell)
    if base == "boolean":
        return cell == "true"
    if base == "list<string>":
        return json.loads(cell) if cell else []
    return _csv_unescape(cell)


# -- files -----------------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_hex(path.read_bytes())
    except OSError:
        return None


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    from afdp.learn.history import _utc_bound

    bound = _utc_bound(moment)
    return bound.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if bound else None
