"""The shape of the code: modules import only downwards (no cycles), the servers import only
what they serve through, registries agree with the config's valid values, modules stay small."""

import ast
import os
import subprocess
import sys

from tf_skiprec.backbones import REGISTRY
from tf_skiprec.config_rules import CHOICES
from tf_skiprec.policy import POLICY_BODIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules(package: str) -> dict[str, str]:
  """{dotted module name: path} of every .py file under `package`."""
  out = {}
  for directory, _, files in os.walk(os.path.join(ROOT, package)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[dotted.removesuffix(".__init__")] = path
  return out


def _imports(path: str, known: set[str]) -> set[str]:
  """The modules of `known` that the file imports, at module level or inside functions
  (`from package import module` imports the module; `from module import name`, the module)."""
  found = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
               for a in node.names]
    else:
      continue
    found |= {n for n in names if n in known}
  return found


def test_the_package_imports_form_no_cycle():
  """So every module has a layer: it imports only modules below it."""
  modules = _modules("tf_skiprec")
  graph = {m: _imports(p, set(modules)) - {m} for m, p in modules.items()}
  state: dict[str, int] = {}

  def visit(module: str, path: list[str]):
    if state.get(module) == 1:
      raise AssertionError("import cycle: " + " -> ".join(path + [module]))
    if state.get(module) == 2:
      return
    state[module] = 1
    for target in sorted(graph[module]):
      visit(target, path + [module])
    state[module] = 2

  for module in sorted(graph):
    visit(module, [])
  assert graph["tf_skiprec.config"] <= {"tf_skiprec.config_rules", "tf_skiprec.errors"}


def test_the_servers_import_only_the_savedmodel_runner():
  served = set(_modules("tf_skiprec"))
  for module, path in _modules("serving").items():
    assert _imports(path, served) <= {"tf_skiprec", "tf_skiprec.export.runner"}, module
  loaded = subprocess.run(
      [sys.executable, "-c", "import serving.server, sys; print(' '.join(sorted(m for m in "
       "sys.modules if m.startswith('tf_skiprec'))))"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
  assert loaded == ["tf_skiprec", "tf_skiprec.export", "tf_skiprec.export.runner"], loaded


def test_registries_hold_exactly_the_valid_names():
  assert sorted(REGISTRY) == sorted(CHOICES["model.backbone"])
  assert sorted(POLICY_BODIES) == sorted(CHOICES["policy.body"])


def test_every_backbone_has_a_block_cost_and_a_frozen_block_for_the_export():
  from tf_skiprec.compute import BLOCK_FLOPS
  from tf_skiprec.config import ModelConfig
  from tf_skiprec.export.frozen import FROZEN_BLOCKS
  assert sorted(BLOCK_FLOPS) == sorted(REGISTRY)
  for name, build in REGISTRY.items():
    backbone = build(10, ModelConfig(backbone=name, channels=8, num_blocks=1), 5)
    assert type(backbone.blocks[0]) in FROZEN_BLOCKS, name


def test_no_module_is_over_400_lines():
  long = {m: n for m, p in _modules("tf_skiprec").items()
          if (n := sum(1 for _ in open(p, encoding="utf-8"))) > 400}
  assert not long, long


def test_library_code_needs_nothing_outside_the_repository():
  for module, path in _modules("tf_skiprec").items():
    assert "../shared" not in open(path, encoding="utf-8").read(), module
