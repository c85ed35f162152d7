"""Interaction-log readers: RecBole atomic files, MovieLens ratings, generic CSV/TSV, and
SASRec's `user item` lines.

Every reader returns an `Interactions` holding the rows in FILE ORDER: raw user and item ids
as strings exactly as written in the file (numpy unicode arrays) and float64 timestamps (for
SASRec's format, which has none, each data line's position: the file's order is time order).
Columns other than user, item and timestamp (ratings, ...) are ignored.

Bad input raises `DataError` naming the file, the 1-based line (when the problem is on one
line; always the FIRST bad line), the problem and a fix. Blank lines (empty or whitespace only,
and holding no separator) are skipped; nothing else is dropped. A trailing '\\r' (Windows line
ends) and a leading UTF-8 byte-order mark are removed. The rules for a data row:
- exactly as many fields as the header (or the format) has columns (header names are compared
  with surrounding spaces stripped; RecBole's `:type` suffix is ignored);
- user and item ids are kept exactly as written (surrounding spaces included) but may not be
  blank or hold control characters (U+0000-U+001F, U+007F-U+009F: signs of a binary file or a
  wrong encoding; numpy would also drop a trailing NUL and merge "a\\0" into "a");
- the timestamp is a finite number in ASCII decimal notation (`881250949`, `-1.5`, `2e9`,
  surrounding spaces allowed); Python-only spellings such as `1_000` or non-ASCII digits,
  `nan` and `inf` are refused;
- with a multi-character separator ('::'), a field may not start or end so as to make the split
  ambiguous (`a:::b`).

`read_source("FORMAT:PATH")` dispatches on FORMAT in `FORMATS`.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import re
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from tf_skiprec.data.interactions import Interactions
from tf_skiprec.errors import DataError

FORMATS = ("recbole", "movielens", "csv", "sasrec")
SOURCE_FORMATS = FORMATS + ("synthetic",)  # `synthetic` is generated elsewhere, not read here
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")

_Line = Tuple[int, str]  # (1-based line number, text without the line end)
_Splitter = Callable[[int, str], List[str]]

_BAD_BYTE = re.compile("[\udc80-\udcff]")     # an undecodable byte (surrogateescape)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters
_BLANKS = re.compile("[ \t]+")                 # SASRec's separator: spaces or tabs
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _require_exists(path: str) -> None:
  if not os.path.exists(path):
    raise DataError(
        "no such file or directory.", path=path,
        fix=f"check the path (relative paths start from {os.getcwd()}).")


def _read_lines(path: str) -> List[_Line]:
  """Reads a UTF-8 text file.

  Undecodable bytes are kept as lone surrogates (surrogateescape) and refused by `_check_text`
  when their line is reached, so that the first bad line is the one reported.

  Returns:
    [(line number, text)] for every line, blank ones included, in file order; '\\r' stripped.
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
  text = data.decode("utf-8", errors="surrogateescape")
  return [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1)]


def _empty_file(path: str) -> DataError:
  return DataError("the file is empty (no data rows).", path=path,
                   fix="point to a file that holds the interaction log.")


def _row_lines(lines: Sequence[_Line], sep: str) -> List[_Line]:
  """The lines that hold a row: not whitespace only, or holding `sep` (a row of empty fields)."""
  return [(number, line) for number, line in lines if line.strip() or sep in line]


def _check_text(path: str, number: int, line: str) -> None:
  """Refuses a line that held bytes that are not UTF-8 (see `_read_lines`)."""
  if line.isascii():  # fast path: an escaped byte is a lone surrogate, never ASCII
    return
  bad = _BAD_BYTE.search(line)
  if bad:
    byte = bytes([ord(bad.group()) - 0xDC00])
    raise DataError(f"the file is not valid UTF-8 text (byte {byte!r} on this line).",
                    path=path, line=number,
                    fix="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).")


def _plain_splitter(path: str, sep: str) -> _Splitter:
  """Splits on `sep`. A multi-character `sep` that can overlap itself ('::') may not overlap a
  field's edge: 'a:::b' has two readings ('a:' + 'b', 'a' + ':b') and is refused; 'a::::b' is
  'a', '', 'b'."""
  runs = [sep[:k] + sep for k in range(1, len(sep)) if sep[k:] == sep[:-k]]  # [':::'] for '::'
  k = len(sep) - 1

  def split(number: int, line: str) -> List[str]:
    fields = line.split(sep)
    if any(run in line for run in runs):  # rare: look at the edges of the fields
      last = len(fields) - 1
      for i, field in enumerate(fields):
        starts = i > 0 and sep in (sep + field[:k])[1:]
        if starts or (i < last and sep in (field[-k:] + sep)[:-1]):
          raise DataError(
              f"field {i + 1} ({field!r}) overlaps the separator {sep!r}, so the line has more "
              f"than one reading.", path=path, line=number,
              fix=f"ids may not start or end with {sep[0]!r} next to {sep!r}; or use a CSV "
                  "with quoted fields.")
    return fields
  return split


def _csv_splitter(path: str, sep: str) -> _Splitter:
  """Splits on `sep`; lines with a double quote go through the csv module (quoted fields)."""
  if len(sep) != 1:
    return _plain_splitter(path, sep)

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
    columns: (user, item, timestamp) field indices; timestamp None: each row's position
      (0, 1, 2, ...), for a file whose order is the time order.
    sep_name: the separator, as shown in messages ("tab", "','", ...).

  Returns:
    Interactions with users/items [n] unicode and timestamps [n] float64, in file order.
  """
  if not lines:
    raise DataError("the file has a header but no data rows.", path=path,
                    fix="add interaction rows below the header.")
  user_col, item_col, time_col = columns
  roles = (("user", user_col), ("item", item_col)) + (
      (("timestamp", time_col),) if time_col is not None else ())
  users, items, times = [], [], []
  for number, line in lines:
    _check_text(path, number, line)
    fields = split(number, line)
    if len(fields) != n_columns:
      raise DataError(
          f"wrong number of columns: expected {n_columns}, found {len(fields)} "
          f"(separator {sep_name}).", path=path, line=number,
          fix=f"give every line exactly {n_columns} fields separated by {sep_name}.")
    user, item = fields[user_col], fields[item_col]
    for role, column in roles:
      if not fields[column].strip():
        raise DataError(f"empty {role} field (column {column + 1}).",
                        path=path, line=number, fix=f"fill in the {role} or remove the line.")
    for role, value, column in (("user", user, user_col), ("item", item, item_col)):
      bad = None if value.isprintable() else _CONTROL.search(value)  # controls never print
      if bad:
        raise DataError(
            f"the {role} id {value!r} (column {column + 1}) holds the control character "
            f"U+{ord(bad.group()):04X}.", path=path, line=number,
            fix="remove control characters from ids (is this a binary file, or one in another "
                "encoding?).")
    seconds = (float(len(times)) if time_col is None
               else _timestamp(path, number, fields[time_col]))
    users.append(user)
    items.append(item)
    times.append(seconds)
  return Interactions(users=np.array(users, dtype=str), items=np.array(items, dtype=str),
                      timestamps=np.array(times, dtype=np.float64), source=path)


def _timestamp(path: str, number: int, stamp: str) -> float:
  """A timestamp field -> seconds; DataError unless a finite number in ASCII decimals."""
  text = stamp.strip(" \t")
  if text.isascii() and text.isdigit():  # fast path: plain Unix seconds
    seconds = float(text)
  else:
    seconds = float(text) if _NUMBER.fullmatch(text) else math.nan
  if not math.isfinite(seconds):
    raise DataError(
        f"timestamp {stamp!r} is not a finite decimal number.", path=path, line=number,
        fix="write timestamps as numbers (e.g. Unix seconds 881250949).")
  return seconds


def _read_headed(path: str, sep: str | None, wanted: Sequence[Tuple[str, str]], fix: str,
                 quoted: bool = True,
                 field_name: Callable[[str], str] = str.strip) -> Interactions:
  """Reads a file whose first non-blank line is a header naming the columns.

  Args:
    sep: the separator; None means tab if the header has a tab, else comma.
    quoted: whether fields may be double-quoted (csv module rules).
  """
  lines = _read_lines(path)
  start = next((i for i, (_, line) in enumerate(lines) if line.strip()), None)
  if start is None:  # whitespace-only lines before the header are skipped
    raise _empty_file(path)
  header_line, header = lines[start]
  _check_text(path, header_line, header)
  if sep is None:
    sep = "\t" if "\t" in header else ","
  split = _csv_splitter(path, sep) if quoted else _plain_splitter(path, sep)
  names = [field_name(n) for n in split(header_line, header)]
  columns = _find_columns(path, header_line, names, wanted, fix)
  sep_name = "tab" if sep == "\t" else repr(sep)
  return _parse_rows(path, _row_lines(lines[start + 1:], sep), split, len(names), columns,
                     sep_name)


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
  if name in ("u.data", "ratings.dat"):
    sep = "\t" if name == "u.data" else "::"
    rows = _row_lines(_read_lines(path), sep)
    if not rows:
      raise _empty_file(path)
    return _parse_rows(path, rows, _plain_splitter(path, sep), 4, (0, 1, 3),
                       "tab" if sep == "\t" else repr(sep))
  if name == "ratings.csv":
    return _read_headed(
        path, ",",
        [("user", "userId"), ("item", "movieId"), ("timestamp", "timestamp")],
        fix="MovieLens ratings.csv starts with the header userId,movieId,rating,timestamp.")
  raise DataError(
      f"unknown MovieLens file name {name!r} (expected one of {expected}).", path=path,
      fix="pass u.data, ratings.dat or ratings.csv (copy or link e.g. u1.base to u.data), "
          "or use csv:PATH for a CSV with a header.")


def read_sasrec(path: str | os.PathLike) -> Interactions:
  """Reads SASRec's format: one `user item` pair a line, no header and no timestamp.

  The public datasets of SASRec, BERT4Rec and their successors ship so (e.g. `ml-1m.txt`),
  each user's lines in time order. The file's order is taken as the time order: the timestamps
  are the data lines' positions (0, 1, 2, ...), so each user's lines keep their order. The two
  fields are separated by spaces or tabs (any run of them), so ids hold neither; ids are kept as
  raw tokens.

  Args:
    path: the file.

  Returns:
    Interactions (users/items [n] str, timestamps [n] float64: 0, 1, ...) in file order.
  """
  path = os.fspath(path)
  rows = [(number, line) for number, line in _read_lines(path) if line.strip(" \t")]
  if not rows:
    raise _empty_file(path)

  def split(number: int, line: str) -> List[str]:
    return _BLANKS.split(line.strip(" \t"))
  return _parse_rows(path, rows, split, 2, (0, 1, None), "spaces or tabs")


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

  FORMAT is `recbole`, `movielens`, `csv` or `sasrec` (e.g. `recbole:data/ml-100k`). The column
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
  if fmt == "sasrec":
    return read_sasrec(path)
  return read_csv(path, user_col, item_col, time_col, sep=sep)
