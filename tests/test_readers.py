"""Tests for tf_skiprec.data.readers on small hand-made files (known answers)."""

import tf_skiprec  # noqa: F401  (sets the Keras 2 environment first)

import numpy as np
import pytest

from tf_skiprec.data.interactions import Interactions
from tf_skiprec.data.readers import (read_csv, read_movielens, read_recbole, read_sasrec,
                                     read_source)
from tf_skiprec.errors import DataError

RECBOLE = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
           "196\t242\t3\t881250949\n"
           "186\t302\t3\t891717742\n"
           "22\t377\t1\t878887116\n")


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(text, bytes):
    path.write_bytes(text)
  else:
    path.write_text(text, encoding="utf-8", newline="")
  return path


def _check(log, users, items, times):
  assert isinstance(log, Interactions)
  assert log.users.dtype.kind == "U" and log.items.dtype.kind == "U"
  assert log.timestamps.dtype == np.float64
  assert log.users.tolist() == users
  assert log.items.tolist() == items
  assert log.timestamps.tolist() == times


def _error(fn, *args, **kwargs):
  with pytest.raises(DataError) as info:
    fn(*args, **kwargs)
  return str(info.value)


# --- correct input -------------------------------------------------------------------------

def test_recbole_file_exact_values_and_order(tmp_path):
  path = _write(tmp_path / "x.inter", RECBOLE)
  log = read_recbole(path)
  _check(log, ["196", "186", "22"], ["242", "302", "377"],
         [881250949.0, 891717742.0, 878887116.0])
  assert log.source == str(path)


def test_recbole_directory_and_column_order_by_name(tmp_path):
  # Columns in a different order, extra token_seq column, CRLF line ends, blank line, ids kept
  # as written ("007" stays "007").
  text = ("timestamp:float\tsome:token_seq\titem_id:token\tuser_id:token\r\n"
          "5.5\ta b\ti9\t007\r\n"
          "\r\n"
          "1\tc\ti1\tu2\r\n")
  _write(tmp_path / "ds" / "ds.inter", text)
  _write(tmp_path / "ds" / "ds.item", "item_id:token\ni9\n")
  log = read_recbole(tmp_path / "ds")
  _check(log, ["007", "u2"], ["i9", "i1"], [5.5, 1.0])
  assert log.source == str(tmp_path / "ds" / "ds.inter")


def test_movielens_u_data(tmp_path):
  _write(tmp_path / "ml" / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
  _check(read_movielens(tmp_path / "ml"), ["196", "186"], ["242", "302"],
         [881250949.0, 891717742.0])
  _check(read_movielens(tmp_path / "ml" / "u.data"), ["196", "186"], ["242", "302"],
         [881250949.0, 891717742.0])


def test_movielens_ratings_dat(tmp_path):
  path = _write(tmp_path / "ml-1m" / "ratings.dat",
                "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n")
  _check(read_movielens(path), ["1", "1", "2"], ["1193", "661", "1357"],
         [978300760.0, 978302109.0, 978298709.0])
  _check(read_movielens(path.parent), ["1", "1", "2"], ["1193", "661", "1357"],
         [978300760.0, 978302109.0, 978298709.0])


def test_movielens_ratings_csv(tmp_path):
  _write(tmp_path / "ml-latest" / "ratings.csv",
         "\ufeffuserId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
  _check(read_movielens(tmp_path / "ml-latest"), ["1", "1"], ["31", "1029"],
         [1260759144.0, 1260759179.0])


def test_csv_comma_sniffed_with_quotes(tmp_path):
  path = _write(tmp_path / "log.csv",
                'when,who,what\n3,alice,"a,b"\n1,bob,x\n2,alice,y\n')
  _check(read_csv(path, "who", "what", "when"), ["alice", "bob", "alice"], ["a,b", "x", "y"],
         [3.0, 1.0, 2.0])


def test_csv_tab_sniffed_and_explicit_sep(tmp_path):
  path = _write(tmp_path / "log.tsv", "u\ti\tt\nA\tB\t10\nC\tD\t20\n")
  _check(read_csv(path, "u", "i", "t"), ["A", "C"], ["B", "D"], [10.0, 20.0])
  path = _write(tmp_path / "log.txt", "u;i;t\nA;B;10\n")
  _check(read_csv(path, "u", "i", "t", sep=";"), ["A"], ["B"], [10.0])


def test_read_source_dispatch(tmp_path):
  _write(tmp_path / "rb" / "rb.inter", RECBOLE)
  _write(tmp_path / "ml" / "u.data", "5\t6\t1\t7\n")
  _write(tmp_path / "c.csv", "user_id,item_id,timestamp\nx,y,3\n")
  _write(tmp_path / "d.csv", "U,I,T\np,q,4\n")
  assert read_source(f"recbole:{tmp_path / 'rb'}").users.tolist() == ["196", "186", "22"]
  _check(read_source(f"movielens:{tmp_path / 'ml'}"), ["5"], ["6"], [7.0])
  _check(read_source(f"csv:{tmp_path / 'c.csv'}"), ["x"], ["y"], [3.0])
  _check(read_source(f"CSV:{tmp_path / 'd.csv'}", user_col="U", item_col="I", time_col="T"),
         ["p"], ["q"], [4.0])


def test_sasrec_lines_in_file_order_with_their_positions_as_timestamps(tmp_path):
  """SASRec's `user item` lines: no header, no timestamp; file order is time order (the
  timestamps are the data lines' positions), spaces or tabs between the two raw tokens."""
  text = "\ufeff1 10\n1  7\r\n\n  \n2\t10\n1 élan\n 2 99 \n"
  path = _write(tmp_path / "ml-1m.txt", text)
  _check(read_sasrec(path), ["1", "1", "2", "1", "2"], ["10", "7", "10", "élan", "99"],
         [0.0, 1.0, 2.0, 3.0, 4.0])
  _check(read_source(f"sasrec:{path}"), ["1", "1", "2", "1", "2"],
         ["10", "7", "10", "élan", "99"], [0.0, 1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("text, line, problem", [
    ("1 10\n1 7 5\n", 2, "expected 2, found 3"),        # a timestamp or rating column
    ("1 10\n\n7\n", 3, "expected 2, found 1"),
    ("1 10\n1 a\x07b\n", 2, "control character U+0007"),
    (b"1 10\n1 \xff\n", 2, "not valid UTF-8"),
])
def test_sasrec_bad_lines_name_the_file_and_line(tmp_path, text, line, problem):
  path = _write(tmp_path / "s.txt", text)
  msg = _error(read_sasrec, path)
  assert f"{path}:{line}: " in msg and problem in msg and "Fix:" in msg


def test_sasrec_empty_file(tmp_path):
  msg = _error(read_sasrec, _write(tmp_path / "s.txt", " \n\t\n"))
  assert "s.txt" in msg and "empty" in msg


# --- bad input -----------------------------------------------------------------------------

def test_missing_path(tmp_path):
  msg = _error(read_recbole, tmp_path / "nope.inter")
  assert "nope.inter" in msg and "no such file" in msg and "Fix:" in msg
  assert "no such file" in _error(read_movielens, tmp_path / "nope")
  assert "no such file" in _error(read_csv, tmp_path / "nope.csv", "u", "i", "t")


def test_empty_file_zero_bytes(tmp_path):
  msg = _error(read_movielens, _write(tmp_path / "u.data", ""))
  assert "u.data" in msg and "empty" in msg
  msg = _error(read_recbole, _write(tmp_path / "e.inter", b"\n  \n\r\n"))
  assert "e.inter" in msg and "empty" in msg


def test_header_only(tmp_path):
  msg = _error(read_recbole, _write(tmp_path / "h.inter", RECBOLE.splitlines()[0] + "\n"))
  assert "h.inter" in msg and "no data rows" in msg
  msg = _error(read_csv, _write(tmp_path / "h.csv", "u,i,t\n\n"), "u", "i", "t")
  assert "h.csv" in msg and "no data rows" in msg


def test_directory_without_inter_file(tmp_path):
  _write(tmp_path / "d" / "d.item", "item_id:token\n")
  msg = _error(read_recbole, tmp_path / "d")
  assert str(tmp_path / "d") in msg and "no *.inter file" in msg and "d.item" in msg


def test_directory_with_several_inter_files(tmp_path):
  _write(tmp_path / "d" / "a.inter", RECBOLE)
  _write(tmp_path / "d" / "b.inter", RECBOLE)
  msg = _error(read_recbole, tmp_path / "d")
  assert "2 *.inter files" in msg and "a.inter" in msg and "b.inter" in msg


def test_directory_without_movielens_file(tmp_path):
  _write(tmp_path / "d" / "u.item", "1|Toy Story\n")
  msg = _error(read_movielens, tmp_path / "d")
  assert str(tmp_path / "d") in msg
  assert "u.data" in msg and "ratings.dat" in msg and "ratings.csv" in msg and "u.item" in msg


def test_unknown_movielens_file_name(tmp_path):
  msg = _error(read_movielens, _write(tmp_path / "u1.base", "1\t2\t3\t4\n"))
  assert "u1.base" in msg and "u.data" in msg


def test_wrong_number_of_columns(tmp_path):
  path = _write(tmp_path / "x.inter", RECBOLE + "7\t8\t9\n")
  msg = _error(read_recbole, path)
  assert "x.inter:5:" in msg and "expected 4, found 3" in msg
  path = _write(tmp_path / "ratings.dat", "1::2::3::4\n\n1::2::3\n")
  msg = _error(read_movielens, path)
  assert "ratings.dat:3:" in msg and "expected 4, found 3" in msg


def test_missing_named_column(tmp_path):
  path = _write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
  msg = _error(read_recbole, path)
  assert "x.inter:1:" in msg and "'timestamp'" in msg
  assert "'user_id', 'item_id', 'rating'" in msg
  path = _write(tmp_path / "c.csv", "user,item,time\n1,2,3\n")
  msg = _error(read_csv, path, "user", "movie", "time")
  assert "c.csv:1:" in msg and "'movie'" in msg and "'user', 'item', 'time'" in msg


def test_non_numeric_timestamp(tmp_path):
  path = _write(tmp_path / "u.data", "1\t2\t3\t4\n1\t2\t3\t4\n1\t2\t3\t12:30\n")
  msg = _error(read_movielens, path)
  assert "u.data:3:" in msg and "'12:30'" in msg and "timestamp" in msg
  path = _write(tmp_path / "n.csv", "u,i,t\na,b,nan\n")
  assert "n.csv:2:" in _error(read_csv, path, "u", "i", "t")


def test_empty_user_or_item(tmp_path):
  path = _write(tmp_path / "x.inter", RECBOLE + "\t5\t1\t9\n")
  msg = _error(read_recbole, path)
  assert "x.inter:5:" in msg and "empty user" in msg
  path = _write(tmp_path / "c.csv", "u,i,t\na,b,1\na, ,2\n")
  msg = _error(read_csv, path, "u", "i", "t")
  assert "c.csv:3:" in msg and "empty item" in msg


def test_invalid_utf8(tmp_path):
  path = _write(tmp_path / "u.data", b"1\t2\t3\t4\n5\t6\t7\t8\n\xff9\t1\t2\t3\n")
  msg = _error(read_movielens, path)
  assert "u.data:3:" in msg and "UTF-8" in msg


def test_unterminated_quote(tmp_path):
  path = _write(tmp_path / "q.csv", 'u,i,t\n"a,b,1\n')
  msg = _error(read_csv, path, "u", "i", "t")
  assert "q.csv:2:" in msg and "quote" in msg


def test_read_source_bad_specs(tmp_path):
  for spec in ["no-colon-here", "parquet:/x/y"]:
    msg = _error(read_source, spec)
    assert repr(spec) in msg
    assert "recbole" in msg and "movielens" in msg and "csv" in msg and "synthetic" in msg
  assert "no path" in _error(read_source, "csv:")
  assert "nope" in _error(read_source, f"recbole:{tmp_path / 'nope'}")
