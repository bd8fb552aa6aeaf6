"""What listing commands print with ``--format table|csv|json`` and ``--columns``, and what
``--dry-run`` prints: pure functions of plain data (unit-tested without Open vSwitch).

Column names are the keys of the ``--json`` output (``ovsvnet list --json`` shows them);
``--columns`` picks and orders them, as ``ovs-vsctl --columns`` does for its tables.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

FORMATS = ("table", "csv", "json")


class Format(NamedTuple):
    """How a listing prints: ``kind`` one of :data:`FORMATS`; ``columns`` () = the
    command's own table (table), its default columns (csv) or every key (json)."""

    kind: str
    columns: tuple[str, ...] = ()


def choose(kind: str | None, as_json: bool, columns: str | None,
           known: Sequence[str]) -> Format:
    """The format asked by ``--format``, ``--json`` (its alias) and ``--columns``;
    ValueError (option, rule) for a contradiction or an unknown column."""
    if as_json and kind not in (None, "json"):
        raise ValueError("--json", f"means --format json; it cannot go with --format {kind}")
    return Format("json" if as_json else kind or "table",
                  parse_columns(columns, known) if columns is not None else ())


def parse_columns(text: str, known: Sequence[str]) -> tuple[str, ...]:
    """``"id,bridge"`` -> ("id", "bridge"); each must be one of ``known``, none twice."""
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or "" in names:
        raise ValueError("--columns", f"{text!r} is not COL,COL,... (columns: "
                         f"{', '.join(known)})")
    for name in names:
        if name not in known:
            raise ValueError("--columns", f"{name!r} is not a column here (columns: "
                             f"{', '.join(known)})")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ValueError("--columns", f"{dup!r} is given twice")
    return tuple(names)


def cell(value: Any, empty: str = "") -> str:
    """One value as text: a list of plain values joined by commas, anything nested as
    compact JSON, None/""/[] as ``empty``."""
    if value is None or value == "" or value == []:
        return empty
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(map(str, value))
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def select(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    return [{c: row.get(c) for c in columns} for row in rows]


def render_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """RFC 4180 CSV with a header line of the column names."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])
    return out.getvalue()


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns under upper-case headers; an empty value shows as ``-``."""
    cells = [[c.upper() for c in columns]]
    cells += [[cell(row.get(c), "-") for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in cells)


def render(data: Any, fmt: Format, default: Sequence[str]) -> str:
    """A listing's rows in ``fmt`` (``default``: the csv columns when none were chosen)."""
    rows = data if isinstance(data, list) else [data]
    if fmt.kind == "json":
        chosen = select(rows, fmt.columns) if fmt.columns else data
        return json.dumps(chosen, indent=2, sort_keys=not fmt.columns) + "\n"
    columns = fmt.columns or tuple(default)
    return render_csv(rows, columns) if fmt.kind == "csv" else render_table(rows, columns)


# -- --dry-run ------------------------------------------------------------------------------

_PLAIN = re.compile(r"[\w.:/@+-]+")


def value_text(value: Any) -> str:
    """A column value as ovs-vsctl prints one: ``[a, b]``, ``{k=v}``, strings quoted only
    when they need it."""
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{value_text(k)}={value_text(v)}"
                               for k, v in sorted(value.items(), key=str)) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        return json.dumps(value)
    return str(value)


def row_lines(op: str, table: str, name: str,
              columns: Iterable[tuple[str, str, Any]]) -> list[str]:
    """One row of a transaction: ``insert Bridge vnet-0097`` and a line per column
    (``name=value``, ``name += [added]``, ``name -= [removed]``)."""
    lines = [f"{op} {table} {name}"]
    for column, how, value in columns:
        text = value_text(value)
        lines.append(f"    {column}={text}" if how == "=" else f"    {column} {how}= {text}")
    return lines


def flow_text(flow: str, new_ports: dict[int, str]) -> str:
    """A flow with the stand-in numbers of ports not created yet replaced by their names
    (ovs-ofctl's name syntax: ``in_port="p-97"``)."""
    if not new_ports:
        return flow
    return re.sub(r"(in_port=|output:)(\d+)\b",
                  lambda m: m.group(1) + (json.dumps(new_ports[int(m.group(2))])
                                          if int(m.group(2)) in new_ports else m.group(2)),
                  flow)


def plan_lines(rows: Sequence[tuple[str, str, str, Sequence[tuple[str, str, Any]]]],
               flows: Sequence[tuple[str, Sequence[str], Sequence[str], bool]],
               new_ports: dict[int, str], bridges: Sequence[str] = ()) -> list[str]:
    """What ``--dry-run`` prints: the transaction's rows, then per bridge the flows that
    would be removed (``-``) and added (``+``); ``bridges`` whose flows ovsvnet keeps are
    said to lose them when the transaction deletes them."""
    out = [f"OVSDB: {len(rows)} row(s) would change (one transaction, sent to ovsdb-server "
           "ending in an abort: nothing committed)" if rows else "OVSDB: no change"]
    for op, table, name, columns in rows:
        out += ["  " + line for line in row_lines(op, table, name, columns)]
    gone = {name for op, table, name, _ in rows if op == "delete" and table == "Bridge"}
    out += [f"flows on {name}: all go with the bridge" for name in sorted(gone)
            if name in bridges and name not in {f[0] for f in flows}]
    for bridge, removed, added, replaced in flows:
        if not removed and not added:
            out.append(f"flows on {bridge}: no change")
            continue
        how = " (ovs-vswitchd lost them: all are replaced)" if replaced else ""
        out.append(f"flows on {bridge}: {len(removed)} to remove, {len(added)} to add or "
                   f"replace (same match){how}")
        out += [f"  - {flow_text(f, new_ports)}" for f in removed]
        out += [f"  + {flow_text(f, new_ports)}" for f in added]
    if new_ports:
        out.append("  (ports this change creates are named: ovs-vswitchd numbers them)")
    return out
