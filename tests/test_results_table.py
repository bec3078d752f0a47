"""The README's results table is generated from the committed results file, never hand-edited."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _trilemma():
    spec = importlib.util.spec_from_file_location("trilemma", ROOT / "benchmarks" / "trilemma.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("trilemma", module)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_results_file():
    trilemma = _trilemma()
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split(trilemma.START, 1)[1].split(trilemma.END, 1)[0].strip("\n")
    assert block.splitlines() == trilemma.readme_table(results["rows"], results["floor"])
    assert len(block.splitlines()) >= len(results["rows"]) + 2  # every row, none dropped
