"""Property-based tests of the readers on random and malformed files (hostile input).

Hypothesis writes interaction files row by row. Each data row is VALID (odd but legal ids,
timestamps in any decimal notation, quoted CSV fields) or MALFORMED in one known way (`_kinds`);
blank lines, LF/CRLF line ends, a missing last line end and a byte-order mark are mixed in, and
a header may be broken too. The generator is the oracle: an all-valid file must read back exactly
as written (every row, in file order, ids unchanged, each timestamp the float64 nearest to its
decimal text, computed here with exact fractions); any other file must raise DataError naming
`path:N`, N the 1-based line of the FIRST malformed row (or of a broken header). Each reader is
reached directly, through a directory where it takes one, and through read_source(FORMAT:PATH).
Item ids read back also go through the IdMap's JSON file unchanged.

The examples are derandomized: the same on every run, and no example database is written.
TF_SKIPREC_FUZZ_EXAMPLES=<n> tries n files per test case instead of 100. The module prints how many
files and rows it tried.
"""

import tf_skiprec  # noqa: F401  (sets the Keras 2 environment first)

import collections
import dataclasses
import fractions
import os
import tempfile
from typing import Callable, List, Optional, Sequence, Tuple

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from tf_skiprec.data.idmap import IdMap
from tf_skiprec.data.interactions import Interactions
from tf_skiprec.data.readers import read_csv, read_movielens, read_recbole, read_source
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
    user, item, time: the column indices of the user, item and timestamp.
    header: the header's fields as written, or None (MovieLens u.data, ratings.dat).
    quoted: whether fields may be double-quoted (csv module rules).
  """
  sep: str
  width: int
  user: int
  item: int
  time: int
  header: Optional[Tuple[str, ...]] = None
  quoted: bool = False

  def legal_id(self, value: str) -> bool:
    """Whether `value` can be written unchanged as an id (a quoted field holds anything)."""
    if self.quoted:
      return True
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
  kinds = ["too_few", "too_many", "empty_id", "empty_time", "bad_time", "control_char",
           "all_empty", "bad_utf8"]
  if layout.header:
    kinds.append("header_again")
  if layout.quoted:
    kinds.append("stray_quote")
  if len(layout.sep) > 1:
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
    fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(["", "x", "1"])))
  elif kind in ("empty_id", "empty_time"):
    column = draw(st.sampled_from(ids)) if kind == "empty_id" else layout.time
    fields[column] = quote(draw(st.sampled_from(["", " ", "  "])))
  elif kind == "bad_time":
    fields[layout.time] = quote(draw(st.sampled_from(_BAD_STAMPS)))
  elif kind == "control_char":
    column = draw(st.sampled_from(ids))
    char = draw(st.sampled_from([c for c in _CONTROLS if c not in sep]))
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


@st.composite
def _recbole_layouts(draw) -> Layout:
  extra = draw(st.lists(st.sampled_from(["rating:float", "tags:token_seq", "label:float"]),
                        unique=True, max_size=2))
  names = draw(st.permutations(["user_id:token", "item_id:token", "timestamp:float"] + extra))
  return Layout("\t", len(names), names.index("user_id:token"), names.index("item_id:token"),
                names.index("timestamp:float"), header=tuple(names))


_MOVIELENS = {
    "u.data": Layout("\t", 4, 0, 1, 3),
    "ratings.dat": Layout("::", 4, 0, 1, 3),
    "ratings.csv": Layout(",", 4, 0, 1, 3, header=("userId", "movieId", "rating", "timestamp"),
                          quoted=True),
}
_CSV_NAMES = ("user_id", "item_id", "timestamp", "uid", "sku", "ts", "rating", "用户", "Who",
              "x y", "when")
# (separator written, separator passed to the reader: None sniffs it from the header)
_CSV_SEPS = ((",", None), ("\t", None), (",", ","), ("\t", "\t"), (";", ";"), ("|", "|"),
             ("::", "::"))


@st.composite
def _csv_layouts(draw) -> Tuple[Layout, Optional[str], Sequence[str]]:
  """(layout, sep to pass, [user, item, time] column names)."""
  names = draw(st.lists(st.sampled_from(_CSV_NAMES), min_size=3, max_size=5, unique=True))
  columns = draw(st.permutations(names))
  sep, passed = draw(st.sampled_from(_CSV_SEPS))
  layout = Layout(sep, len(names), columns.index(names[0]), columns.index(names[1]),
                  columns.index(names[2]), quoted=len(sep) == 1)
  pad = st.sampled_from(["", " "])  # names are stripped
  header = tuple(layout.render(draw(pad) + n + draw(pad), draw(st.booleans())) for n in columns)
  return dataclasses.replace(layout, header=header), passed, names[:3]


@pytest.mark.parametrize("via", ["reader", "directory", "read_source"])
@_SETTINGS
@hypothesis.given(data=st.data())
def test_recbole_reads_every_valid_row_and_stops_at_the_first_bad_one(via, data):
  layout = data.draw(_recbole_layouts())
  fuzzed = data.draw(_files(layout))
  with tempfile.TemporaryDirectory() as tmp:
    directory = os.path.join(tmp, "ds")
    path = os.path.join(directory, "ds.inter")
    if via == "read_source":
      spec = data.draw(st.sampled_from(["recbole", "RecBole", " recbole"])) + ":" + data.draw(
          st.sampled_from([directory, path]))
    read = {"reader": lambda: read_recbole(path),
            "directory": lambda: read_recbole(directory),
            "read_source": lambda: read_source(spec)}[via]
    _run("recbole", via, fuzzed, path, read)


@pytest.mark.parametrize("via", ["reader", "directory", "read_source"])
@_SETTINGS
@hypothesis.given(data=st.data())
def test_movielens_reads_every_valid_row_and_stops_at_the_first_bad_one(via, data):
  name = data.draw(st.sampled_from(sorted(_MOVIELENS)))
  fuzzed = data.draw(_files(_MOVIELENS[name]))
  with tempfile.TemporaryDirectory() as tmp:
    directory = os.path.join(tmp, "ml")
    path = os.path.join(directory, name)
    if via == "read_source":
      spec = data.draw(st.sampled_from(["movielens", "MovieLens"])) + ":" + data.draw(
          st.sampled_from([directory, path]))
    read = {"reader": lambda: read_movielens(path),
            "directory": lambda: read_movielens(directory),
            "read_source": lambda: read_source(spec)}[via]
    _run(f"movielens {name}", via, fuzzed, path, read)


@pytest.mark.parametrize("via", ["reader", "read_source"])
@_SETTINGS
@hypothesis.given(data=st.data())
def test_csv_reads_every_valid_row_and_stops_at_the_first_bad_one(via, data):
  layout, sep, (user, item, time) = data.draw(_csv_layouts())
  fuzzed = data.draw(_files(layout))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "d", data.draw(st.sampled_from(["log.csv", "log.tsv", "log.txt"])))
    if via == "read_source":
      read = lambda: read_source(f"csv:{path}", user_col=user, item_col=item,  # noqa: E731
                                 time_col=time, sep=sep)
    else:
      read = lambda: read_csv(path, user, item, time, sep=sep)  # noqa: E731
    _run("csv" if sep else "csv (sniffed)", via, fuzzed, path, read)


def _decimal(text: str) -> Optional[float]:
  """The float64 nearest to `text` if it is a finite number in ASCII decimal notation, else None.

  Written out by hand (no float() or regex), so it shares nothing with the reader's parsing.
  """
  number = text.strip(" \t")
  mantissa, e, exponent = number.replace("E", "e").partition("e")
  mantissa = mantissa[1:] if mantissa[:1] in ("+", "-") else mantissa
  negative = exponent[:1] == "-"
  exponent = exponent[1:] if exponent[:1] in ("+", "-") else exponent
  whole, _, frac = mantissa.partition(".")
  ascii_digits = lambda t: all(c in "0123456789" for c in t)  # noqa: E731
  if not (whole or frac) or (e and not exponent) or not ascii_digits(whole + frac + exponent):
    return None
  if len(exponent.lstrip("0")) > 3:  # 10^±1000 and beyond: 0 (underflow) or inf (overflow)
    return 0.0 if negative or not (whole + frac).strip("0") else None
  try:
    return float(fractions.Fraction(number))  # exact, then rounded
  except OverflowError:
    return None


# Characters of numbers, and of strings that only look like numbers.
_STAMP_CHARS = "0123456789+-.eE_ \t\u0661\uff11\u00a0\x1cnaifxX,:"


@st.composite
def _near_numbers(draw) -> str:
  """A decimal number as written, with up to 2 characters inserted or replaced."""
  text = draw(_stamps())[0]
  for _ in range(draw(st.integers(0, 2))):
    at = draw(st.integers(0, len(text)))
    replace = at < len(text) and draw(st.booleans())
    text = text[:at] + draw(st.sampled_from(_STAMP_CHARS)) + text[at + replace:]
  return text


@hypothesis.settings(_SETTINGS, max_examples=3 * _SETTINGS.max_examples)  # 1 row: cheap
@hypothesis.given(text=_near_numbers() | st.text(st.sampled_from(_STAMP_CHARS), max_size=10))
def test_a_timestamp_is_read_if_and_only_if_it_is_a_finite_decimal_number(text):
  value = _decimal(text)
  data = f'user,item,time\nu,i,"{text}"\n'.encode("utf-8")  # quoted: ',' and tab are text
  fuzzed = Fuzzed(data, ["u"], ["i"], [value], None if value is not None else 2,
                  ["valid" if value is not None else "bad_time"])
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "t.csv")
    _run("csv timestamp field", "reader", fuzzed, path,
         lambda: read_csv(path, "user", "item", "time"))


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
  """Prints how many files and rows were tried, per format and per malformed kind."""
  yield
  lines = [f"fuzzed {fmt}: {c['files']} files ({c['read_back']} read back exactly, "
           f"{c['rejected']} rejected at the right line; "
           + ", ".join(f"{c[k]} {k}" for k in sorted(c) if k.startswith("via "))
           + f"), {c['rows_valid']} valid + {c['rows_malformed']} malformed rows"
           for fmt, c in sorted(COUNTS.items())]
  if KINDS:
    lines.append("fuzzed malformed kinds: "
                 + ", ".join(f"{k} {n}" for k, n in sorted(KINDS.items())))
  capture = request.config.pluginmanager.get_plugin("capturemanager")
  with capture.global_and_fixture_disabled():  # shown even when output is captured
    print("\n" + "\n".join(lines))


def test_every_format_and_kind_was_fuzzed():
  """Runs last: the property tests above really tried every format and malformed kind."""
  formats = {"recbole", "csv", "csv (sniffed)"} | {f"movielens {n}" for n in _MOVIELENS}
  if not formats <= set(COUNTS):
    pytest.skip("run with the whole module to check the counts")
  for fmt in formats:
    for key in ("files", "rows_valid", "rows_malformed", "read_back", "rejected", "via reader",
                "via read_source"):
      assert COUNTS[fmt][key] > 0, (fmt, key, dict(COUNTS[fmt]))
  every = set(_HEADER_FAULTS) | {k for layout in _MOVIELENS.values() for k in _kinds(layout)}
  assert every <= {k for k, n in KINDS.items() if n > 0}, dict(KINDS)
