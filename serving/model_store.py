"""The versions of one model under a base path, loaded and kept current, as TF Serving does.

Every `poll_seconds` the base path is scanned for integer version folders: the versions the
version policy asks for are loaded (the SavedModel, then its warm-up requests), the others
unloaded. A version that fails to load (a corrupt saved_model.pb, missing or truncated variables,
a folder with no saved_model.pb yet) is reported (GetModelStatus: END with the error) and not
tried again until a file in its folder changes (a fingerprint of every file's path, size, mtime
and ctime). The versions already loaded keep serving: as TF Serving's availability-preserving
policy, a version the policy no longer asks for is unloaded only once one it asks for is
AVAILABLE (or when it asks for none), so a broken newest version under "latest" does not take the
model down. Exports are renamed into place whole (tf_skiprec/export/exporter.py), so a half-written
version is normally never seen.

A request holds its version from lookup to answer (`handle`, TF Serving's ServableHandle): a
version being retired leaves the lookup at once (UNLOADING) but is closed only when the requests
holding it have been answered (at most UNLOAD_WAIT_SECONDS), so a version swap under load, with
requests waiting in a batch queue, loses none of them. Its memory is then released at once, as
TF Serving releases it: a closed version's tf.Graph sits in reference cycles, which Python frees
only at its next full collection, often many versions later (bench/serving_soak.py: the server's
RSS climbed ~17 MiB a version until one came), so the store collects after each unload. The
server freezes the objects it holds from start-up out of collections (serving/server.py), which
makes one ~10 ms instead of ~150 ms. Then the C heap's free pages go back to the system
(glibc's malloc_trim: ~90 MiB less RSS in a load/unload loop). A smaller growth remains in the
soak, 0.3 to 1.5 MiB a swap (BUILD_NOTES.md, issue 16).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import os
import threading
import time

import tensorflow as tf

from tf_skiprec.export.runner import (SavedModelRunner, SignatureError, code_name,
                                          first_line)

LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"
MAX_BATCH = 4096  # rows of one request (TF Serving with batching: max_batch_size, 64 here)
UNLOAD_WAIT_SECONDS = 60.0  # how long a retired version waits for the requests holding it


@dataclasses.dataclass
class VersionPolicy:
  """TF Serving's ServableVersionPolicy: "all", "latest" (the newest `num_versions`), or
  "specific" (`versions`)."""
  kind: str = "all"
  num_versions: int = 1
  versions: tuple[int, ...] = ()

  @classmethod
  def parse(cls, text: str) -> "VersionPolicy":
    """"all", "latest", "latest:N" or "specific:1,2" -> a policy."""
    kind, _, arg = text.partition(":")
    try:
      if kind == "all" and not arg:
        return cls("all")
      if kind == "latest":
        return cls("latest", num_versions=int(arg or 1))
      if kind == "specific" and arg:
        return cls("specific", versions=tuple(int(v) for v in arg.split(",")))
    except ValueError:
      pass
    raise ValueError(f"version policy {text!r}: expected all, latest, latest:N or specific:1,2")

  def select(self, available: list[int]) -> set[int]:
    """The versions on disk this policy asks for."""
    if self.kind == "latest":
      return set(sorted(available)[-self.num_versions:])
    if self.kind == "specific":
      return set(available) & set(self.versions)
    return set(available)


@dataclasses.dataclass
class Version:
  number: int
  state: str
  error: str = ""
  stamp: tuple = ()                     # the folder's fingerprint when loaded or tried
  runner: SavedModelRunner | None = None
  error_code: str = ""                  # a gRPC status name, with `error`
  handles: int = 0                      # requests holding it (ModelStore.handle)


class ModelStore:
  """One model's versions. `runner(version)` is safe to call from any thread."""

  def __init__(self, name: str, base_path: str, policy: VersionPolicy | None = None,
               poll_seconds: float = 1.0):
    self.name = name
    self.base_path = base_path
    self.policy = policy or VersionPolicy()
    self.poll_seconds = poll_seconds
    self._versions: dict[int, Version] = {}
    self._lock = threading.Lock()
    self._released = threading.Condition(self._lock)   # a handle was given back
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # ---- requests --------------------------------------------------------------------------------

  def runner(self, version: int | None = None) -> tuple[int, SavedModelRunner]:
    """The runner of `version`, or of the newest available one, for a look that runs nothing
    (metadata). NOT_FOUND otherwise. A request that runs the model holds it with `handle`."""
    with self._lock:
      chosen = self._lookup(version)
      return chosen.number, chosen.runner

  @contextlib.contextmanager
  def handle(self, version: int | None = None):
    """with store.handle(version) as (number, runner): ... -- the version (None: the newest
    available) stays loaded until the block ends, even if the version policy retires it
    meanwhile. NOT_FOUND if it is not available now."""
    with self._lock:
      chosen = self._lookup(version)
      chosen.handles += 1
      runner = chosen.runner      # the runner itself: an unload clears chosen.runner
    try:
      yield chosen.number, runner
    finally:
      with self._lock:
        chosen.handles -= 1
        self._released.notify_all()

  def _lookup(self, version: int | None) -> Version:
    """The AVAILABLE Version asked for (None: the newest); NOT_FOUND otherwise. Under _lock."""
    ready = {n: v for n, v in self._versions.items() if v.state == AVAILABLE}
    if version is None:
      if not ready:
        raise SignatureError("NOT_FOUND", f"Servable not found for request: Latest({self.name}). "
                             "Fix: wait for a version to load (GetModelStatus shows why none "
                             "has).")
      version = max(ready)
    if version not in ready:
      raise SignatureError("NOT_FOUND",
                           f"Servable not found for request: Specific({self.name}, {version}). "
                           f"Fix: ask for an available version ({sorted(ready) or 'none'}) or "
                           "leave the version out for the newest.")
    return ready[version]

  def status(self, version: int | None = None) -> list[Version]:
    """Every known version (or one), newest first; possibly none."""
    with self._lock:
      versions = sorted(self._versions.values(), key=lambda v: -v.number)
    return versions if version is None else [v for v in versions if v.number == version]

  # ---- loading ---------------------------------------------------------------------------------

  def poll(self) -> None:
    """Loads the versions the policy wants that are not loaded (or that failed on other files),
    then unloads the others, but keeps the newest of those while no wanted version is AVAILABLE."""
    on_disk = self._scan()
    wanted = self.policy.select(list(on_disk))
    for number in sorted(wanted):
      with self._lock:
        known = self._versions.get(number)
      if known and known.state == AVAILABLE:
        continue
      stamp = self._fingerprint(on_disk[number])
      if known and known.error and known.stamp == stamp:
        continue  # failed on these very files
      self._load(number, on_disk[number], stamp)
    with self._lock:
      ready = {n for n, v in self._versions.items() if v.state == AVAILABLE}
      gone = sorted(ready - wanted)
      if wanted and not ready & wanted:
        gone = gone[:-1]  # the newest keeps serving until a wanted version is available
      gone = [self._versions[n] for n in gone]
      for v in gone:
        v.state = UNLOADING
    deadline = time.monotonic() + UNLOAD_WAIT_SECONDS   # one wait for all of them
    for v in gone:
      with self._lock:           # the requests holding it are answered first (or the store stops)
        self._released.wait_for(lambda v=v: v.handles == 0 or self._stop.is_set(),
                                 max(0.0, deadline - time.monotonic()))
        if v.handles:
          logging.warning("Unloading %s version %d with %d requests still holding it; they "
                          "will get UNAVAILABLE.", self.name, v.number, v.handles)
      v.runner.close()
      with self._lock:
        v.state, v.runner = END, None
      logging.info("Unloaded %s version %d.", self.name, v.number)
    if gone:
      gc.collect()  # the closed versions' graphs (reference cycles): see the module docstring
      _trim_heap()

  def start(self) -> "ModelStore":
    """Polls once now, then every poll_seconds in a daemon thread."""
    self.poll()
    self._thread = threading.Thread(target=self._loop, name=f"poll-{self.name}", daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    with self._lock:
      self._stop.set()
      self._released.notify_all()   # an unload waiting for requests gives up
    if self._thread:
      self._thread.join(timeout=30)
    with self._lock:
      runners = [v.runner for v in self._versions.values() if v.runner is not None]
    for runner in runners:
      runner.close()

  def _loop(self) -> None:
    while not self._stop.wait(self.poll_seconds):
      try:
        self.poll()
      except Exception:  # noqa: BLE001  (a bad scan must not stop the server)
        logging.exception("Polling %s failed.", self.base_path)

  def _scan(self) -> dict[int, str]:
    """{version: its folder} for the integer folders under base_path ("007" is version 7)."""
    try:
      names = sorted(os.listdir(self.base_path))  # "7" (after "007") wins
    except FileNotFoundError:
      return {}
    return {int(name): os.path.join(self.base_path, name) for name in names
            if name.isascii() and name.isdigit() and int(name) < 2**63
            and os.path.isdir(os.path.join(self.base_path, name))}

  @staticmethod
  def _fingerprint(root: str) -> tuple:
    """(path, size, mtime, ctime) of every file and folder in a version folder: a failed
    version is tried again when any of them changes (a saved_model.pb or variables/ written
    later; ctime too, as a copy may keep the old mtime)."""
    found = []
    for folder, dirs, files in os.walk(root):
      for name in sorted(dirs) + sorted(files):
        path = os.path.join(folder, name)
        try:
          stat = os.stat(path)
        except OSError:
          continue  # removed while we looked: the next poll sees the change
        found.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns,
                      stat.st_ctime_ns))
    return tuple(sorted(found))

  def _load(self, number: int, path: str, stamp: tuple) -> None:
    with self._lock:
      self._versions[number] = Version(number, LOADING, stamp=stamp)
    try:
      runner = SavedModelRunner(path, max_batch=MAX_BATCH)
      try:
        warmed = runner.warm_up()
      except BaseException:
        runner.close()
        raise
    except Exception as e:  # noqa: BLE001  (any failure: refuse this version, keep the others)
      text = first_line(e.message) if isinstance(e, tf.errors.OpError) else str(e)
      first = (text.strip().splitlines() or [""])[0][:300]
      message = (f"{path}: could not load ({type(e).__name__}: {first}). Fix: export the "
                 "version again (tf_skiprec.export writes it whole); the folder is tried again "
                 "when its files change.")
      logging.error("%s", message)
      code = (e.code if isinstance(e, SignatureError) else
              code_name(e) if isinstance(e, tf.errors.OpError) else "UNKNOWN")
      with self._lock:
        self._versions[number] = Version(number, END, error=message, stamp=stamp,
                                         error_code=code)
      return
    with self._lock:
      self._versions[number] = Version(number, AVAILABLE, stamp=stamp, runner=runner)
    logging.info("Loaded %s version %d from %s (%d warm-up requests).", self.name, number, path,
                 warmed)


def _trim_heap() -> None:
  """Returns the C heap's free pages to the system (glibc's malloc_trim; nothing elsewhere)."""
  name = ctypes.util.find_library("c")
  try:
    trim = ctypes.CDLL(name).malloc_trim if name else None
  except (OSError, AttributeError):
    trim = None
  if trim is not None:
    trim(0)
