"""The versions of one model under a base path, loaded and kept current, as TF Serving does.

Every `poll_seconds` the base path is scanned for integer version folders: the versions the
version policy asks for are loaded (the SavedModel, then its warm-up requests), the others
unloaded. A version that fails to load is reported (GetModelStatus: END with the error) and not
tried again until its folder changes; the versions already loaded keep serving. Exports are
renamed into place whole (tf_skiprec/export.py), so a half-written version is never seen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

from tf_skiprec.savedmodel_runner import SavedModelRunner, SignatureError

LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"


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
  stamp: float = 0.0                    # mtime of saved_model.pb when loaded or tried
  runner: SavedModelRunner | None = None


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
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # ---- requests --------------------------------------------------------------------------------

  def runner(self, version: int | None = None) -> tuple[int, SavedModelRunner]:
    """The runner of `version`, or of the newest available one. NOT_FOUND otherwise."""
    with self._lock:
      ready = {n: v for n, v in self._versions.items() if v.state == AVAILABLE}
    if version is None:
      if not ready:
        raise SignatureError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")
      version = max(ready)
    if version not in ready:
      raise SignatureError("NOT_FOUND",
                           f"Servable not found for request: Specific({self.name}, {version})")
    return version, ready[version].runner

  def status(self, version: int | None = None) -> list[Version]:
    """Every known version (or one), newest first; possibly none."""
    with self._lock:
      versions = sorted(self._versions.values(), key=lambda v: -v.number)
    return versions if version is None else [v for v in versions if v.number == version]

  # ---- loading ---------------------------------------------------------------------------------

  def poll(self) -> None:
    """Loads the versions the policy wants that are not loaded, unloads the others."""
    on_disk = self._scan()
    wanted = self.policy.select(list(on_disk))
    for number in sorted(wanted):
      with self._lock:
        known = self._versions.get(number)
      if known and (known.state == AVAILABLE or known.stamp == on_disk[number]):
        continue  # loaded, or failed on these very files
      self._load(number, on_disk[number])
    with self._lock:
      gone = [v for n, v in self._versions.items() if n not in wanted and v.state == AVAILABLE]
      for v in gone:
        v.state = UNLOADING
    for v in gone:
      v.runner.close()
      with self._lock:
        v.state, v.runner = END, None
      logging.info("Unloaded %s version %d.", self.name, v.number)

  def start(self) -> "ModelStore":
    """Polls once now, then every poll_seconds in a daemon thread."""
    self.poll()
    self._thread = threading.Thread(target=self._loop, name=f"poll-{self.name}", daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    if self._thread:
      self._thread.join(timeout=30)
    with self._lock:
      versions = list(self._versions.values())
    for v in versions:
      if v.runner is not None:
        v.runner.close()

  def _loop(self) -> None:
    while not self._stop.wait(self.poll_seconds):
      try:
        self.poll()
      except Exception:  # noqa: BLE001  (a bad scan must not stop the server)
        logging.exception("Polling %s failed.", self.base_path)

  def _scan(self) -> dict[int, float]:
    """{version: mtime of its saved_model.pb} for the integer folders under base_path."""
    found = {}
    try:
      names = os.listdir(self.base_path)
    except FileNotFoundError:
      return found
    for name in names:
      if name.isdigit():
        pb = os.path.join(self.base_path, name, "saved_model.pb")
        try:
          found[int(name)] = os.stat(pb).st_mtime
        except FileNotFoundError:
          found[int(name)] = -1.0  # a folder without a model: reported when tried
    return found

  def _load(self, number: int, stamp: float) -> None:
    path = os.path.join(self.base_path, str(number))
    with self._lock:
      self._versions[number] = Version(number, LOADING, stamp=stamp)
    try:
      runner = SavedModelRunner(path)
      try:
        warmed = runner.warm_up()
      except BaseException:
        runner.close()
        raise
    except Exception as e:  # noqa: BLE001  (any failure: refuse this version, keep the others)
      first = (str(e).splitlines() or [""])[0][:300]
      message = f"{path}: could not load ({type(e).__name__}: {first})"
      logging.error("%s", message)
      with self._lock:
        self._versions[number] = Version(number, END, error=message, stamp=stamp)
      return
    with self._lock:
      self._versions[number] = Version(number, AVAILABLE, stamp=stamp, runner=runner)
    logging.info("Loaded %s version %d from %s (%d warm-up requests).", self.name, number, path,
                 warmed)
