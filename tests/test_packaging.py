"""The package as users get it: a built wheel carries the configs, and the README's commands are what CI runs."""

from __future__ import annotations

import re
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_built_wheel_runs_from_an_unrelated_directory(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True)
    (wheel,) = wheels.glob("dltrain-*.whl")
    with zipfile.ZipFile(wheel) as archive:  # the configs and Hydra's plugin (the Optuna sweeper) ship inside
        names = set(archive.namelist())
    assert {"dltrain/conf/train.yaml", "dltrain/conf/hydra/sweeper/optuna.yaml", "dltrain/conf/experiment/cnn_digits.yaml",
            "hydra_plugins/dltrain_optuna_sweeper/optuna_sweeper.py"} <= names
    # every module of every subpackage (pyproject's packages list names each one)
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "dltrain").rglob("*.py")} <= names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True)
    # The dependencies come from this environment; dltrain itself only from the new one.
    new_site = Path(subprocess.check_output([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                            text=True).strip())
    (new_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.check_output([str(python), "-c", "import dltrain.paths as p; print(p.config_dir())"],
                                    cwd=elsewhere, text=True).strip()
    assert Path(where) == new_site / "dltrain" / "conf"
    proc = subprocess.run([str(venv / "bin" / "dltrain"), "trainer=cpu", "trainer.max_epochs=1", "model=softmax"],
                          cwd=elsewhere, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["outputs"]
    (results,) = elsewhere.glob("outputs/runs/*/results.json")
    proc = subprocess.run([str(venv / "bin" / "dltrain-eval"), f"ckpt_path={results.parent}"], cwd=elsewhere,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_ci_runs_the_readme_quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    quick_start = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(quick_start) == 2
    assert "dltrain" in quick_start[0] and "pytest" in quick_start[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in quick_start:
        assert command in ci


def test_every_third_party_import_is_a_declared_dependency():
    """The wheel's dependency list covers what the package imports (a missing one breaks only fresh installs)."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!\[ ;]", spec)[0].lower() for spec in project["dependencies"]}
    declared |= {re.split(r"[<>=!\[ ;]", spec)[0].lower()
                 for specs in project.get("optional-dependencies", {}).values() for spec in specs}
    imported = set()
    for source in (ROOT / "dltrain").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.keyword) and node.arg == "engine" and isinstance(node.value, ast.Constant):
                imported.add(node.value.value)  # pandas imports its engine (pyarrow) by name
    third_party = imported - set(sys.stdlib_module_names) - {"dltrain", "__future__"}
    distributions = packages_distributions()
    undeclared = {name for name in third_party
                  if not {d.lower() for d in distributions.get(name, [name])} & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {sorted(undeclared)}"
