"""The fuzzed interaction files of tests/test_readers_fuzz.py (its docstring says how they are
used): file layouts, valid and malformed rows (`_kinds`), whole files with their oracle
(`_files`), and the check of one read against that oracle (`_run`). COUNTS and KINDS count what
was tried; test_readers_fuzz.py prints them and checks that every format and kind was reached.
"""

import collections
import dataclasses
import fractions
import os
from typing import Callable, List, Optional, Tuple

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from tf_skiprec.data.idmap import IdMap
from tf_skiprec.data.interactions import Interactions
from tf_skiprec.errors import DataError

_SETTINGS = hypothesis.settings(
    max_examples=int(os.environ.get("TF_SKIPREC_FUZZ_EXAMPLES", "100")), derandomize=True,
    database=None, deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large])

COUNTS = collections.defaultdict(collections.Counter)  # {format: {"files": n, ...}}
KINDS = collections.Counter()                           # {malformed kind: rows tried}

_BOM = b"\xef\xbb\xbf"
# Legal but odd ids: kept exactly as written (spaces, quotes, number look-alikes included).
_ODD_IDS = ("007", "0", "-1", "1.0", "1e3", "nan", "inf", "NULL", " a", "a ", "a b", "é", "日本語",
            "🎵", "\u200b", "\ufeffx", "\u00a0x", "x\u2028y", "'q'", 'say "hi"', '"', "a\\b",
            "1,5", "a;b", "a|b", "x:y", "#", "𝔘")
_FILLERS = ("3", "4.5", "", "x y", "-", "nan")  # columns that are not read (ratings, ...)
_BAD_STAMPS = ("nan", "NaN", "-nan", "inf", "-Infinity", "1e999", "-2e400", "12:30", "0x1A",
               "1_000", "\u0661\u0662", "\uff11\uff12", "1e", "e5", ".", "+-1", "1.2.3", "abc",
               "1 2", "\x1c1", "1\x00", "\u00a012", "2020-01-01")
_CONTROLS = ("\x00", "\x01", "\x07", "\x08", "\t", "\x0b", "\x0c", "\r", "\x1b", "\x1c", "\x1f",
             "\x7f", "\x85", "\x9f")
_BAD_BYTES = (b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80",
              b"\xf5\x80\x80\x80")
_HEADER_FAULTS = ("missing_column", "duplicate_column")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the columns of one file are and how its fields are written.

  Attributes:
    sep: the separator written between fields.
    width: the number of columns.
    user, item, time: the column indices of the user, item and timestamp (time None: there is
      none, and a row's timestamp is its position among the data rows: SASRec's format).
    header: the header's fields as written, or None (MovieLens u.data, ratings.dat).
    quoted: whether fields may be double-quoted (csv module rules).
    runs: whether any run of spaces and tabs separates fields (SASRec's format); `sep` is the
      one written.
  """
  sep: str
  width: int
  user: int
  item: int
  time: Optional[int]
  header: Optional[Tuple[str, ...]] = None
  quoted: bool = False
  runs: bool = False

  def legal_id(self, value: str) -> bool:
    """Whether `value` can be written unchanged as an id (a quoted field holds anything)."""
    if self.quoted:
      return True
    if self.runs:
      return " " not in value and "\t" not in value
    edges = set(self.sep) if len(self.sep) > 1 else set()  # 'a:' before '::' is ambiguous
    return self.sep not in value and value[0] not in edges and value[-1] not in edges

  def render(self, value: str, quote: bool) -> str:
    """The field as written: quoted when asked or needed (quoted layouts only)."""
    if self.quoted and (quote or self.sep in value or '"' in value):
      return '"' + value.replace('"', '""') + '"'
    return value


@dataclasses.dataclass
class Fuzzed:
  """A generated file and what reading it must give.

  Attributes:
    data: the file's bytes.
    users, items: [n] the ids of the valid rows as written; times: [n] their float64 values.
    bad_line: the 1-based line of the first malformed row or broken header; None if none.
    kinds: one entry per data row ("valid" or a malformed kind), plus a header fault if any.
  """
  data: bytes
  users: List[str]
  items: List[str]
  times: List[float]
  bad_line: Optional[int]
  kinds: List[str]


def _kinds(layout: Layout) -> List[str]:
  """The malformed-row kinds that `layout`'s rules reject."""
  kinds = ["too_few", "too_many", "empty_id", "control_char", "bad_utf8"]
  if layout.time is not None:
    kinds += ["empty_time", "bad_time"]
  if not layout.runs:            # with runs of blanks as the separator, an all-empty row is blank
    kinds.append("all_empty")
  if layout.header:
    kinds.append("header_again")
  if layout.quoted:
    kinds.append("stray_quote")
  if len(layout.sep) > 1 and not layout.runs:
    kinds.append("overlapping_sep")
  return kinds


def _ids(layout: Layout) -> st.SearchStrategy:
  chars = st.characters(exclude_categories=("Cc", "Cs"))  # no control characters or surrogates
  return (st.sampled_from(_ODD_IDS) | st.text(chars, min_size=1, max_size=6)
          | st.integers(0, 10**18).map(str)).filter(lambda s: s.strip() and layout.legal_id(s))


@st.composite
def _stamps(draw) -> Tuple[str, float]:
  """(text, value): a finite decimal number as written, and the float64 nearest to it."""
  digits = "0123456789"
  whole = draw(st.text(digits, max_size=12))
  frac = draw(st.none() | st.text(digits, max_size=6))  # None: no decimal point
  if not whole and not frac:
    whole = draw(st.text(digits, min_size=1, max_size=10))
  number = draw(st.sampled_from(["", "", "-", "+"])) + whole + ("" if frac is None else "." + frac)
  if draw(st.booleans()):
    number += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"])) + str(
        draw(st.integers(0, 99)))
  pad = st.sampled_from(["", "", " ", "  "])
  return draw(pad) + number + draw(pad), float(fractions.Fraction(number))  # exact, then rounded


def _malform(draw, layout: Layout, kind: str, fields: List[str], values: List[str]) -> bytes:
  """One row of the malformed `kind`, made from a valid row.

  Args:
    fields: [width] the valid row's fields as written (changed here).
    values: [width] the same fields before quoting.
  """
  sep, ids = layout.sep, (layout.user, layout.item)
  quote = lambda value: layout.render(value, draw(st.booleans()))  # noqa: E731
  if kind == "too_few":
    del fields[draw(st.integers(0, len(fields) - 1))]
  elif kind == "too_many":
    extra = ["x", "1"] if layout.runs else ["", "x", "1"]   # "" would merge into a run of blanks
    fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(extra)))
  elif kind in ("empty_id", "empty_time"):
    column = draw(st.sampled_from(ids)) if kind == "empty_id" else layout.time
    fields[column] = quote(draw(st.sampled_from(["", " ", "  "])))
  elif kind == "bad_time":
    fields[layout.time] = quote(draw(st.sampled_from(_BAD_STAMPS)))
  elif kind == "control_char":
    column = draw(st.sampled_from(ids))
    blanks = " \t" if layout.runs else sep
    char = draw(st.sampled_from([c for c in _CONTROLS if c not in blanks]))
    at = draw(st.integers(0, len(values[column]) - (char == "\r")))  # a last '\r' is a line end
    fields[column] = quote(values[column][:at] + char + values[column][at:])
  elif kind == "all_empty":
    fields[:] = [draw(st.sampled_from(["", " "])) for _ in fields]
  elif kind == "header_again":
    fields[:] = layout.header
  elif kind == "stray_quote":
    fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(['"abc', '"a"b', '"a" ']))
  elif kind == "overlapping_sep":  # 'a:' + '::' reads as 'a' + '::' + ':...'
    column = draw(st.sampled_from(ids))
    before = column == layout.width - 1 or (column > 0 and draw(st.booleans()))
    fields[column] = sep[-1] + values[column] if before else values[column] + sep[0]
  row = sep.join(fields).encode("utf-8")
  if kind == "bad_utf8":
    junk = draw(st.sampled_from(_BAD_BYTES))
    row = junk + row if draw(st.booleans()) else row + junk
  return row


def _break_header(draw, layout: Layout, fault: str) -> List[str]:
  """The header's fields with the user, item or time column missing or named twice."""
  fields = list(layout.header)
  wanted = draw(st.sampled_from([layout.user, layout.item, layout.time]))
  if fault == "missing_column":
    fields[wanted] = layout.render("other:token" if ":" in fields[wanted] else "other", False)
  else:
    fields[draw(st.sampled_from([i for i in range(layout.width) if i != wanted]))] = fields[wanted]
  return fields


@st.composite
def _files(draw, layout: Layout) -> Fuzzed:
  """A file in `layout`: all rows valid, or (half the time) some malformed."""
  kinds = _kinds(layout)
  malformed = draw(st.booleans())
  rows = draw(st.lists(st.sampled_from(["valid"] * 3 + kinds) if malformed else st.just("valid"),
                       min_size=1, max_size=10))
  fault = None
  if malformed and layout.header and draw(st.integers(0, 4)) == 0:
    fault = draw(st.sampled_from(_HEADER_FAULTS))
  elif malformed and rows.count("valid") == len(rows):
    rows[draw(st.integers(0, len(rows) - 1))] = draw(st.sampled_from(kinds))
  blanks = st.lists(st.sampled_from(["", " ", "  "] + (["\t"] if "\t" not in layout.sep else [])),
                    max_size=1)
  ids = _ids(layout)
  lines = [b.encode() for b in draw(blanks)]
  bad_line = None
  if layout.header:
    header = _break_header(draw, layout, fault) if fault else layout.header
    lines.append(layout.sep.join(header).encode("utf-8"))
    bad_line = len(lines) if fault else None
  users, items, times = [], [], []
  for kind in rows:
    lines += [b.encode() for b in draw(blanks)]
    values = [draw(st.sampled_from(_FILLERS)) for _ in range(layout.width)]
    values[layout.user], values[layout.item] = draw(ids), draw(ids)
    if layout.time is None:
      seconds = float(len(users))       # its position among the data rows
    else:
      values[layout.time], seconds = draw(_stamps())
    fields = [layout.render(v, draw(st.booleans())) for v in values]
    if kind == "valid":
      users.append(values[layout.user])
      items.append(values[layout.item])
      times.append(seconds)
      lines.append(layout.sep.join(fields).encode("utf-8"))
    else:
      lines.append(_malform(draw, layout, kind, fields, values))
      bad_line = bad_line or len(lines)
  lines += [b.encode() for b in draw(blanks)]
  ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
  if draw(st.booleans()):
    ends[-1] = b""
  data = b"".join(line + end for line, end in zip(lines, ends))
  # A leading U+FEFF is a byte-order mark and is dropped: an id starting with one needs a BOM.
  bom = _BOM if draw(st.booleans()) or data.startswith(_BOM) else b""
  return Fuzzed(bom + data, users, items, times, bad_line, rows + ([fault] if fault else []))


def _run(fmt: str, via: str, fuzzed: Fuzzed, path: str,
         read: Callable[[], Interactions]) -> None:
  """Writes `fuzzed` to `path`, reads it with `read()` (by way of `via`) and checks it against
  the oracle."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(fuzzed.data)
  counts = COUNTS[fmt]
  counts["files"] += 1
  counts[f"via {via}"] += 1
  counts["rows_valid"] += fuzzed.kinds.count("valid")
  counts["rows_malformed"] += sum(k not in ("valid",) + _HEADER_FAULTS for k in fuzzed.kinds)
  KINDS.update(k for k in fuzzed.kinds if k != "valid")
  if fuzzed.bad_line is None:
    log = read()
    assert log.users.dtype.kind == "U" and log.items.dtype.kind == "U"
    assert log.timestamps.dtype == np.float64
    assert log.users.tolist() == fuzzed.users
    assert log.items.tolist() == fuzzed.items
    assert log.timestamps.tolist() == fuzzed.times
    if log.items.size:  # the item ids also survive the id map's JSON file
      IdMap.from_items(log.items).save(path + ".id_map.json")
      id_map = IdMap.load(path + ".id_map.json")
      assert id_map.decode(id_map.encode(log.items)).tolist() == fuzzed.items
    counts["read_back"] += 1
  else:
    with pytest.raises(DataError) as info:
      read()
    message = str(info.value)
    assert f"{path}:{fuzzed.bad_line}: " in message, (fuzzed.kinds, message)
    assert (info.value.path, info.value.line) == (path, fuzzed.bad_line)
    assert "Fix: " in message
    counts["rejected"] += 1
