"""What an OVSDB transaction that is built but not committed would change, for ``--dry-run``
(ovs-vsctl's: the transaction then goes to the server ending in an ``abort``).

Reads python-ovs's staged rows (``txn._txn_rows``, each row's ``_changes``, ``_mutations``
and ``_data``), which python-ovs has no public accessor for; :mod:`ovsvnet.ovsdb` is the only
other module that touches its private attributes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ovs.db.idl


class RowChange(NamedTuple):
    """A row a transaction inserts, updates or deletes (for --dry-run), in plain values:
    references are row names. ``columns``: (column, how, value), ``how`` being "=" (the
    value), "+" (set elements or map entries added) or "-" (removed; a map's keys)."""

    op: str
    table: str
    name: str
    columns: tuple[tuple[str, str, Any], ...] = ()


def is_new(row: Any) -> bool:
    """Whether ``row`` is inserted by the transaction being built (no ofport yet...)."""
    return row._data is None


def _label(row: Any) -> str:
    if row._table.name == "Open_vSwitch":
        return "."  # ovs-vsctl's name for the one record
    datum = (row._changes or {}).get("name") or (row._data or {}).get("name")
    return str(datum.to_python(lambda atom, base: atom)) if datum is not None \
        else str(row.uuid)[:8]


def staged_changes(txn: Any) -> list[RowChange]:
    """What ``txn`` (built, not committed) would change, row by row; writes of the value a
    column already has are left out (python-ovs sends them, nothing changes)."""
    rows = list(txn._txn_rows.values())
    labels = {row.uuid: _label(row) for row in rows}

    def plain(value: Any) -> Any:
        if isinstance(value, ovs.db.idl.Row):
            return labels.get(value.uuid) or _label(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {plain(k): plain(v) for k, v in value.items()}
        return value

    def old_refs(row: Any) -> Any:
        """python-ovs's reference lookup, which also finds the rows ``txn`` deletes."""
        def lookup(atom: Any, base: Any) -> Any:
            if not base.ref_table:
                return atom
            return row._uuid_to_row(atom, base) or staged.get(atom) or atom
        return lookup

    staged = {row.uuid: row for row in rows}
    out = []
    for row in rows:
        table = row._table.name
        if row._changes is None:
            out.append(RowChange("delete", table, labels[row.uuid]))
            continue
        old = row._data or {}
        cols: list[tuple[str, str, Any]] = []
        for name in sorted({*row._changes, *(k for m in row._mutations.values() for k in m)}):
            kind = row._table.columns[name].type
            new = plain(getattr(row, name))
            before: Any = plain(old[name].to_python(old_refs(row))) if name in old else \
                {} if kind.is_map() else []
            if new == before or (row._data is None and new in ([], {}, "", 0, None)):
                continue
            if row._data is None or not (kind.is_map() or kind.n_max > 1):
                if kind.is_optional() and isinstance(new, list) and len(new) == 1:
                    new = new[0]  # fail_mode=standalone, as ovs-vsctl prints it
                cols.append((name, "=", new))
            elif kind.is_map():
                cols += [c for c in ((name, "+", {k: v for k, v in new.items()
                                                  if before.get(k) != v}),
                                     (name, "-", [k for k in before if k not in new])) if c[2]]
            else:
                cols += [c for c in ((name, "+", [v for v in new if v not in before]),
                                     (name, "-", [v for v in before if v not in new])) if c[2]]
        if cols or row._data is None:
            out.append(RowChange("insert" if row._data is None else "update", table,
                                 labels[row.uuid], tuple(cols)))
    return sorted(out, key=lambda c: ORDER.get(c.table, len(ORDER)))  # stable: staged order


#: Tables in the order ovs-vsctl show nests them.
ORDER = {"Open_vSwitch": 0, "Bridge": 1, "Port": 2, "Interface": 3}
