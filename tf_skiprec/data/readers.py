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

import os
from typing import Callable, List, Sequence, Tuple

from tf_skiprec.data.interactions import Interactions
from tf_skiprec.data.rows import (_BLANKS, _check_text, _csv_splitter, _empty_file, _find_columns,
                                  _parse_rows, _plain_splitter, _read_lines, _require_exists,
                                  _row_lines)
from tf_skiprec.errors import DataError

FORMATS = ("recbole", "movielens", "csv", "sasrec")
SOURCE_FORMATS = FORMATS + ("synthetic",)  # `synthetic` is generated elsewhere, not read here
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")

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
