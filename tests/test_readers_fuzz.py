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

The files are made in tests/fuzzed_files.py. The examples are derandomized: the same on every
run, and no example database is written.
TF_SKIPREC_FUZZ_EXAMPLES=<n> tries n files per test case instead of 100. The module prints how many
files and rows it tried.
"""

import tf_skiprec  # noqa: F401  (sets the Keras 2 environment first)

import dataclasses
import fractions
import os
import tempfile
from typing import Optional, Sequence, Tuple

import hypothesis
from hypothesis import strategies as st
import pytest

from fuzzed_files import (COUNTS, KINDS, _HEADER_FAULTS, _SETTINGS, Fuzzed, Layout, _files, _kinds,
                          _run, _stamps)
from tf_skiprec.data.readers import (read_csv, read_movielens, read_recbole, read_sasrec,
                                     read_source)


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


_SASREC = Layout(" ", 2, 0, 1, None, runs=True)


@pytest.mark.parametrize("via", ["reader", "read_source"])
@_SETTINGS
@hypothesis.given(data=st.data())
def test_sasrec_reads_every_valid_row_and_stops_at_the_first_bad_one(via, data):
  layout = dataclasses.replace(_SASREC, sep=data.draw(st.sampled_from([" ", "\t", "  ", " \t"])))
  fuzzed = data.draw(_files(layout))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "d", "ml-1m.txt")
    read = (lambda: read_source(f"sasrec:{path}")) if via == "read_source" else (  # noqa: E731
        lambda: read_sasrec(path))
    _run("sasrec", via, fuzzed, path, read)


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
  formats = {"recbole", "csv", "csv (sniffed)", "sasrec"} | {f"movielens {n}" for n in _MOVIELENS}
  if not formats <= set(COUNTS):
    pytest.skip("run with the whole module to check the counts")
  for fmt in formats:
    for key in ("files", "rows_valid", "rows_malformed", "read_back", "rejected", "via reader",
                "via read_source"):
      assert COUNTS[fmt][key] > 0, (fmt, key, dict(COUNTS[fmt]))
  every = set(_HEADER_FAULTS) | {k for layout in _MOVIELENS.values() for k in _kinds(layout)}
  assert every <= {k for k, n in KINDS.items() if n > 0}, dict(KINDS)
