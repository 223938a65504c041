"""Tables from CSV files and scikit-learn's bundled sets: column kinds inferred (or given), missing cells kept,
the project's train / held-out halves, and CSV writing with the original names, kinds and categories.

Specs: `table:PATH.csv`, `table:wine`, `table:breast_cancer`, `table:diabetes`, `table:iris`, each optionally with
`@train` or `@heldout`: the rows shuffled by numpy's `default_rng(0).permutation`, the first half (N // 2 rows)
train and the rest held out.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from rediffuse.data.table_types import KINDS, Column, Schema, Table
from rediffuse.errors import ConfigError

MISSING = ("", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
BOOLEANS = {"true", "false"}
FEW = 10  # integer columns with at most this many distinct values are categories
BUILTIN = ("wine", "breast_cancer", "diabetes", "iris")
PARTS = ("train", "heldout")


def is_table_spec(spec: str) -> bool:
    """Whether a data spec names a table (table:...)."""
    return spec.startswith("table:")


def split_spec(spec: str) -> tuple[str, str | None]:
    """(the source after `table:`, the part or None) of a table spec."""
    source = spec[len("table:"):] if is_table_spec(spec) else spec
    base, _, part = source.rpartition("@")
    return (base, part) if base and part in PARTS else (source, None)


def load_table(spec: str, overrides: str | None = None, target: str | None = None) -> Table:
    """The rows a table spec names (ConfigError naming the problem and the fix for bad input)."""
    source, part = split_spec(spec)
    table = _builtin(source) if source in BUILTIN else read_csv(Path(source), overrides)
    if target is not None and target not in table.schema.names:
        raise ConfigError(f"the target column {target!r} is not in the table; its columns are "
                          f"{', '.join(table.schema.names)}")
    if target is not None:
        table = Table(Schema(table.schema.columns, target), table.values)
    return table if part is None else holdout_part(table, part)


def holdout_part(table: Table, part: str) -> Table:
    """The project's split: rows in default_rng(0).permutation order, the first N // 2 'train', the rest 'heldout'."""
    order = np.random.default_rng(0).permutation(len(table))
    half = len(table) // 2
    return table.rows(np.sort(order[:half] if part == "train" else order[half:]))


def read_csv(path: Path, overrides: str | None = None) -> Table:
    """A CSV file with a header row; kinds inferred per column, or given by `overrides` ('age:int,id:drop')."""
    if not path.is_file():
        raise ConfigError(f"table file {str(path)!r} does not exist; check the path after table:")
    header, body = _rows(path)
    kinds = parse_overrides(overrides, header)
    cells = {name: [row[j].strip() for row in body] for j, name in enumerate(header)}
    columns, values = [], {}
    for name in header:
        if kinds.get(name) == "drop":
            continue
        column, array = build_column(name, cells[name], kinds.get(name))
        columns.append(column)
        values[name] = array
    if not columns:
        raise ConfigError(f"{path}: every column was dropped; keep at least one")
    return Table(Schema(tuple(columns)), values)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """(the header, the data rows) of a UTF-8 CSV (ConfigError for a bad file)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start} is 0x{raw[err.start]:02x}); save it as UTF-8"
                          ) from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if len(rows) < 2:
        raise ConfigError(f"{path} has no data rows; a table needs a header row and at least one row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path} line {number} has {len(row)} fields, the header has {len(header)}; fix "
                              "that row (quote fields holding commas)")
    if len(set(header)) != len(header):
        raise ConfigError(f"{path} repeats a column name in its header; give each column its own name")
    return header, body


ALIASES = {"int": "integer", "num": "numeric", "float": "numeric", "cat": "categorical", "bool": "boolean"}


def parse_overrides(overrides: str | None, header: list[str]) -> dict[str, str]:
    """{column: kind} from 'name:kind,...' (kinds: numeric, integer, categorical, boolean, drop and their short
    forms num, float, int, cat, bool)."""
    out: dict[str, str] = {}
    for item in filter(None, (overrides or "").split(",")):
        name, _, kind = item.strip().rpartition(":")
        kind = ALIASES.get(kind, kind)
        if not name or kind not in (*KINDS, "drop"):
            raise ConfigError(f"bad --columns item {item!r}; write NAME:KIND with KIND one of num, int, cat, "
                              "bool, drop")
        if name not in header:
            raise ConfigError(f"--columns names {name!r}, which is not a column; the columns are "
                              f"{', '.join(header)}")
        out[name] = kind
    return out


def build_column(name: str, cells: list[str], kind: str | None = None) -> tuple[Column, np.ndarray]:
    """A column and its array from its cells, of the given kind or the inferred one."""
    missing = np.array([c in MISSING for c in cells])
    present = [c for c, m in zip(cells, missing) if not m]
    token = next((c for c, m in zip(cells, missing) if m), "")
    if not present:
        raise ConfigError(f"column {name!r} is missing in every row; drop it with --columns {name}:drop")
    kind = kind or infer_kind(present)
    if kind in ("numeric", "integer"):
        try:
            numbers = np.array([np.nan if m else float(c) for c, m in zip(cells, missing)])
        except ValueError:
            bad = next(c for c in present if not _is_float(c))
            raise ConfigError(f"column {name!r} is {kind} but holds {bad!r}; fix the cell or make it "
                              f"categorical with --columns {name}:cat") from None
        return Column(name, kind, (), bool(missing.any()), token, _decimals(present)), numbers
    labels = [token if m else (c.lower() if kind == "boolean" else c) for c, m in zip(cells, missing)]
    categories = sorted(set(labels) - {token}, key=_category_key) + ([token] if missing.any() else [])
    if kind == "categorical" and len(categories) > max(FEW, len(cells) // 2):
        raise ConfigError(f"column {name!r} has {len(categories)} distinct values in {len(cells)} rows: it looks "
                          f"like an identifier; drop it with --columns {name}:drop")
    code = {c: i for i, c in enumerate(categories)}
    return Column(name, kind, tuple(categories), False, token), np.array([code[c] for c in labels], dtype=np.int64)


def infer_kind(present: list[str]) -> str:
    """boolean (true/false), categorical (text, or integers with few distinct values), integer or numeric."""
    distinct = set(present)
    if {c.lower() for c in distinct} <= BOOLEANS:
        return "boolean"
    if all(_is_int(c) for c in distinct):
        return "categorical" if len(distinct) <= FEW else "integer"
    return "numeric" if all(_is_float(c) for c in distinct) else "categorical"


def _decimals(present: list[str]) -> int | None:
    """The most digits after a decimal point in plain decimal cells (None if any is in exponent form)."""
    if any("e" in c.lower() for c in present):
        return None
    return max(len(c.partition(".")[2]) for c in present)


def _is_int(text: str) -> bool:
    """Whether text is an integer literal."""
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_float(text: str) -> bool:
    """Whether text is a finite number."""
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def _category_key(text: str) -> tuple[int, float, str]:
    """Numbers in numeric order before other text, then text in order (a stable code order)."""
    return (0, float(text), "") if _is_float(text) else (1, 0.0, text)


def _builtin(name: str) -> Table:
    """One of scikit-learn's bundled tables, its target a column ('target'): categorical for the classifiers."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(**({"scaled": False} if name == "diabetes" else {}))
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    cells = {n: [f"{v:.10g}" for v in bunch.data[:, j]] for j, n in enumerate(names)}
    if name == "diabetes":
        cells["target"] = [f"{v:.10g}" for v in bunch.target]
    else:
        cells["target"] = [str(bunch.target_names[t]) for t in bunch.target]
    columns, values = [], {}
    for n, column_cells in cells.items():
        column, array = build_column(n, column_cells)
        columns.append(column)
        values[n] = array
    return Table(Schema(tuple(columns)), values)


def read_for_schema(path: Path, schema: Schema) -> tuple[Table, dict[str, np.ndarray]]:
    """Rows of a CSV in a run's schema, and per column where its cells are empty (to be filled); other missing
    tokens are values as in training (ConfigError for other columns, or a category the run never saw)."""
    if not path.is_file():
        raise ConfigError(f"input file {str(path)!r} does not exist; give a CSV of rows with the run's columns")
    header, body = _rows(path)
    if header != schema.names:
        raise ConfigError(f"{path} has the columns {', '.join(header)}; the run's table has "
                          f"{', '.join(schema.names)} (in that order)")
    values, empty = {}, {}
    for j, column in enumerate(schema.columns):
        cells = [row[j].strip() for row in body]
        empty[column.name] = np.array([c == "" for c in cells])
        if column.numeric:
            bad = [c for c in cells if c and c not in MISSING and not _is_float(c)]
            if bad:
                raise ConfigError(f"column {column.name!r} holds numbers, got {bad[0]!r}; fix the cell")
            values[column.name] = np.array([float(c) if c and c not in MISSING else np.nan for c in cells])
            continue
        code = {c: i for i, c in enumerate(column.categories)}
        known = [c.lower() if column.kind == "boolean" else c for c in cells]
        unseen = [c for c in known if c and c not in code]
        if unseen:
            raise ConfigError(f"column {column.name!r} has the category {unseen[0]!r}, which the run never saw; "
                              f"use one of {', '.join(column.categories)} (or leave the cell empty to fill it)")
        values[column.name] = np.array([code.get(c, 0) for c in known], dtype=np.int64)
    return Table(schema, values), empty


def write_csv(table: Table, path: Path) -> None:
    """The table as a CSV with a header row, cells as the source wrote them."""
    columns = [table.cells(name) for name in table.schema.names]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.schema.names)
    writer.writerows(zip(*columns))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())
