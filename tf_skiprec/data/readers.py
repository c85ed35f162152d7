"""Interaction-log readers: RecBole atomic files, MovieLens ratings and generic CSV/TSV.

Every reader returns an `Interactions` holding the rows in FILE ORDER: raw user and item ids
as strings exactly as written in the file (numpy unicode arrays) and float64 timestamps.
Columns other than user, item and timestamp (ratings, ...) are ignored.

Bad input raises `DataError` naming the file, the 1-based line (when the problem is on one
line), the problem and a fix. Blank (whitespace-only) lines are skipped; nothing else is
dropped. A trailing '\\r' (Windows line ends) and a leading UTF-8 byte-order mark are removed.

`read_source("FORMAT:PATH")` dispatches on FORMAT in `FORMATS`.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from tf_skiprec.data.interactions import Interactions
from tf_skiprec.errors import DataError

FORMATS = ("recbole", "movielens", "csv")
# Formats a source spec may name; `synthetic` is generated elsewhere, not read here.
SOURCE_FORMATS = FORMATS + ("synthetic",)
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")

_Line = Tuple[int, str]  # (1-based line number, text without the line end)
_Splitter = Callable[[int, str], List[str]]


def _require_exists(path: str) -> None:
  if not os.path.exists(path):
    raise DataError(
        "no such file or directory.", path=path,
        fix=f"check the path (relative paths start from {os.getcwd()}).")


def _read_lines(path: str) -> List[_Line]:
  """Reads a UTF-8 text file.

  Returns:
    [(line number, text)] for the non-blank lines, in file order; '\\r' stripped.
  """
  _require_exists(path)
  if os.path.isdir(path):
    raise DataError("is a directory, but a file is needed here.", path=path,
                    fix="pass the path of the data file itself.")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"cannot read the file ({e.strerror or e}).", path=path,
                    fix="check that the file exists and is readable.") from None
  if data.startswith(codecs.BOM_UTF8):
    data = data[len(codecs.BOM_UTF8):]
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise DataError(
        f"the file is not valid UTF-8 text (byte {data[e.start:e.start + 1]!r}: {e.reason}).",
        path=path, line=line,
        fix="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from None
  lines = []
  for number, line in enumerate(text.split("\n"), start=1):
    line = line.rstrip("\r")
    if line.strip():
      lines.append((number, line))
  if not lines:
    raise DataError("the file is empty (no data rows).", path=path,
                    fix="point to a file that holds the interaction log.")
  return lines


def _plain_splitter(sep: str) -> _Splitter:
  return lambda number, line: line.split(sep)


def _csv_splitter(path: str, sep: str) -> _Splitter:
  """Splits on `sep`; lines with a double quote go through the csv module (quoted fields)."""
  if len(sep) != 1:
    return _plain_splitter(sep)

  def split(number: int, line: str) -> List[str]:
    if '"' not in line:
      return line.split(sep)
    try:
      return next(csv.reader([line], delimiter=sep, strict=True))
    except csv.Error as e:
      raise DataError(f"cannot parse the quoted fields on this line ({e}).", path=path,
                      line=number, fix="close every opening double quote on the line; "
                      "fields may not span lines.") from None
  return split


def _find_columns(path: str, line: int, names: Sequence[str],
                  wanted: Sequence[Tuple[str, str]], fix: str) -> List[int]:
  """Indices of the wanted columns.

  Args:
    names: the column names in the header.
    wanted: [(role, name)], e.g. [("user", "user_id")].
    fix: the fix to suggest when a column is missing.

  Returns:
    One column index per entry of `wanted`.
  """
  indices = []
  for role, name in wanted:
    hits = [i for i, n in enumerate(names) if n == name]
    if not hits:
      raise DataError(
          f"the header has no {role} column named {name!r}; its columns are: "
          f"{', '.join(repr(n) for n in names)}.", path=path, line=line, fix=fix)
    if len(hits) > 1:
      raise DataError(
          f"the header has {len(hits)} columns named {name!r} (columns "
          f"{', '.join(str(i + 1) for i in hits)}); cannot tell which is the {role}.",
          path=path, line=line, fix="rename the duplicate columns.")
    indices.append(hits[0])
  return indices


def _parse_rows(path: str, lines: Sequence[_Line], split: _Splitter, n_columns: int,
                columns: Sequence[int], sep_name: str) -> Interactions:
  """Parses data lines into an `Interactions`.

  Args:
    lines: [(line number, text)] data lines (no header).
    split: turns (line number, text) into fields.
    n_columns: how many fields each line must have.
    columns: (user, item, timestamp) field indices.
    sep_name: the separator, as shown in messages ("tab", "','", ...).

  Returns:
    Interactions with users/items [n] unicode and timestamps [n] float64, in file order.
  """
  if not lines:
    raise DataError("the file has a header but no data rows.", path=path,
                    fix="add interaction rows below the header.")
  user_col, item_col, time_col = columns
  users, items, times = [], [], []
  for number, line in lines:
    fields = split(number, line)
    if len(fields) != n_columns:
      raise DataError(
          f"wrong number of columns: expected {n_columns}, found {len(fields)} "
          f"(separator {sep_name}).", path=path, line=number,
          fix=f"give every line exactly {n_columns} fields separated by {sep_name}.")
    user, item, stamp = fields[user_col], fields[item_col], fields[time_col]
    for role, column in (("user", user_col), ("item", item_col), ("timestamp", time_col)):
      if not fields[column].strip():
        raise DataError(f"empty {role} field (column {column + 1}).",
                        path=path, line=number, fix=f"fill in the {role} or remove the line.")
    try:
      seconds = float(stamp)
    except ValueError:
      seconds = None
    if seconds is None or not math.isfinite(seconds):
      raise DataError(
          f"timestamp {stamp!r} is not a finite number.", path=path, line=number,
          fix="write timestamps as numbers (e.g. Unix seconds 881250949).")
    users.append(user)
    items.append(item)
    times.append(seconds)
  return Interactions(users=np.array(users, dtype=str), items=np.array(items, dtype=str),
                      timestamps=np.array(times, dtype=np.float64), source=path)


def _read_headed(path: str, sep: str | None, wanted: Sequence[Tuple[str, str]], fix: str,
                 quoted: bool = True,
                 field_name: Callable[[str], str] = str.strip) -> Interactions:
  """Reads a file whose first non-blank line is a header naming the columns.

  Args:
    sep: the separator; None means tab if the header has a tab, else comma.
    quoted: whether fields may be double-quoted (csv module rules).
  """
  lines = _read_lines(path)
  header_line, header = lines[0]
  if sep is None:
    sep = "\t" if "\t" in header else ","
  split = _csv_splitter(path, sep) if quoted else _plain_splitter(sep)
  names = [field_name(n) for n in split(header_line, header)]
  columns = _find_columns(path, header_line, names, wanted, fix)
  sep_name = "tab" if sep == "\t" else repr(sep)
  return _parse_rows(path, lines[1:], split, len(names), columns, sep_name)


def _listing(directory: str) -> str:
  names = sorted(os.listdir(directory))
  if not names:
    return "it is empty"
  more = f", ... ({len(names)} entries)" if len(names) > 10 else ""
  return "it holds: " + ", ".join(names[:10]) + more

def _the_one_file(directory: str, found: list[str], fmt: str, *, none: str, several: str,
                  fix_none: str) -> str:
  """The path of the single data file `found` in `directory`; a DataError for none or several."""
  if not found:
    raise DataError(none, path=directory, fix=fix_none)
  if len(found) > 1:
    raise DataError(f"{several} ({', '.join(found)}); cannot tell which to read.",
                    path=directory, fix=f"name the file, e.g. {fmt}:{os.path.join(directory, found[0])}.")
  return os.path.join(directory, found[0])



def read_recbole(path: str | os.PathLike) -> Interactions:
  """Reads a RecBole atomic `.inter` file.

  The file is tab-separated; its first line is a typed header such as
  `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float`. Columns are found
  by the name before the colon: `user_id`, `item_id` and `timestamp` (required).

  Args:
    path: the `.inter` file, or a directory holding exactly one `*.inter` file.

  Returns:
    Interactions (users/items [n] str, timestamps [n] float64) in file order.
  """
  path = os.fspath(path)
  _require_exists(path)
  if os.path.isdir(path):
    found = sorted(n for n in os.listdir(path)
                   if n.endswith(".inter") and os.path.isfile(os.path.join(path, n)))
    path = _the_one_file(path, found, "recbole",
                         none=f"directory has no *.inter file ({_listing(path)}).",
                         several=f"directory has {len(found)} *.inter files",
                         fix_none="point to a RecBole dataset directory or to the .inter file.")
  return _read_headed(
      path, "\t",
      [("user", "user_id"), ("item", "item_id"), ("timestamp", "timestamp")],
      fix="RecBole .inter files need user_id, item_id and timestamp columns "
          "(header like user_id:token<TAB>item_id:token<TAB>timestamp:float).",
      quoted=False, field_name=lambda n: n.split(":", 1)[0].strip())


def read_movielens(path: str | os.PathLike) -> Interactions:
  """Reads MovieLens ratings; the format is chosen by the file name.

  - `u.data` (ML-100K): tab-separated `user item rating timestamp`, no header.
  - `ratings.dat` (ML-1M/10M): `user::item::rating::timestamp`, no header.
  - `ratings.csv` (ML-20M/25M/latest): header `userId,movieId,rating,timestamp`.

  Args:
    path: one of those files, or a directory holding exactly one of them.

  Returns:
    Interactions (users/items [n] str, timestamps [n] float64) in file order.
  """
  path = os.fspath(path)
  _require_exists(path)
  expected = ", ".join(MOVIELENS_FILES)
  if os.path.isdir(path):
    found = [n for n in MOVIELENS_FILES if os.path.isfile(os.path.join(path, n))]
    path = _the_one_file(
        path, found, "movielens",
        none=f"directory has no MovieLens ratings file (expected one of {expected}; "
             f"{_listing(path)}).",
        several="directory has several MovieLens ratings files",
        fix_none="point to the unpacked MovieLens directory or to the ratings file.")
  name = os.path.basename(path)
  if name == "u.data":
    return _parse_rows(path, _read_lines(path), _plain_splitter("\t"), 4, (0, 1, 3), "tab")
  if name == "ratings.dat":
    return _parse_rows(path, _read_lines(path), _plain_splitter("::"), 4, (0, 1, 3), "'::'")
  if name == "ratings.csv":
    return _read_headed(
        path, ",",
        [("user", "userId"), ("item", "movieId"), ("timestamp", "timestamp")],
        fix="MovieLens ratings.csv starts with the header userId,movieId,rating,timestamp.")
  raise DataError(
      f"unknown MovieLens file name {name!r} (expected one of {expected}).", path=path,
      fix="pass u.data, ratings.dat or ratings.csv (copy or link e.g. u1.base to u.data), "
          "or use csv:PATH for a CSV with a header.")


def read_csv(path: str | os.PathLike, user_col: str, item_col: str, time_col: str,
             sep: str | None = None) -> Interactions:
  """Reads a CSV/TSV file with a header row.

  Fields holding the separator may be double-quoted (one line per row).

  Args:
    path: the file.
    user_col, item_col, time_col: header names of the user, item and timestamp columns.
    sep: the field separator; None sniffs it: tab if the header has a tab, else comma.

  Returns:
    Interactions (users/items [n] str, timestamps [n] float64) in file order.
  """
  path = os.fspath(path)
  if sep is not None and (not sep or any(c in sep for c in '\r\n"')):
    raise DataError(f"unusable separator {sep!r}.", path=path,
                    fix="pass sep=',' or sep='\\t' (or None to sniff).")
  return _read_headed(
      path, sep,
      [("user", user_col), ("item", item_col), ("timestamp", time_col)],
      fix="name existing columns as the user/item/time columns, or add them to the header.")


def read_source(spec: str, *, user_col: str = "user_id", item_col: str = "item_id",
                time_col: str = "timestamp", sep: str | None = None) -> Interactions:
  """Reads the interaction log named by `FORMAT:PATH`.

  FORMAT is `recbole`, `movielens` or `csv` (e.g. `recbole:../shared/data/ml-100k`). The column
  names and `sep` are used by `csv` only. `synthetic` sources are generated elsewhere.

  Returns:
    Interactions (users/items [n] str, timestamps [n] float64) in file order.
  """
  valid = ", ".join(f"{f}:PATH" for f in FORMATS) + " or synthetic"
  fmt, colon, path = str(spec).partition(":")
  fmt = fmt.strip().lower()
  if (not colon and fmt != "synthetic") or fmt not in SOURCE_FORMATS:
    what = "has no FORMAT: prefix" if not colon else f"has unknown format {fmt!r}"
    example = path if colon else spec
    raise DataError(f"data source {spec!r} {what}; valid formats: {valid}.",
                    fix=f"write the source as FORMAT:PATH, e.g. recbole:{example}.")
  if fmt == "synthetic":
    raise DataError(
        f"data source {spec!r} is synthetic; synthetic data is generated, not read from a file "
        f"(file formats: {', '.join(FORMATS)}).",
        fix="pass synthetic specs to the synthetic generator, or name a file source.")
  if not path.strip():
    raise DataError(f"data source {spec!r} has no path after {fmt}:.",
                    fix=f"write e.g. {fmt}:path/to/data.")
  if fmt == "recbole":
    return read_recbole(path)
  if fmt == "movielens":
    return read_movielens(path)
  return read_csv(path, user_col, item_col, time_col, sep=sep)
