"""The rows of an interaction file, for the format readers (tf_skiprec/data/readers.py, whose
docstring has the rules): reading its lines (UTF-8, byte-order mark and '\r' dropped), splitting
them into fields, and checking each row's ids and timestamp into an `Interactions`. Every
problem is a DataError naming the file, the line and the fix."""

from __future__ import annotations

import codecs
import csv
import math
import os
import re
from typing import Callable, List, Sequence, Tuple

import numpy as np

from tf_skiprec.data.interactions import Interactions
from tf_skiprec.errors import DataError

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
