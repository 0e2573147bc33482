"""The README's Python example runs as written (on a subset of the same data)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
DATA = "../shared/datasets/malaria"


def _python_example() -> str:
    section = README.read_text().split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_example_runs(
    malaria_dir: Path, malaria_subset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    code = _python_example()
    data = tmp_path / "malaria"
    shutil.copytree(malaria_subset, data, symlinks=True)
    for used in re.findall(re.escape(DATA) + r"/([^\"]+)", code):  # the example's own images
        if not (data / used).exists():
            (data / used).symlink_to(malaria_dir / used)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace(DATA, str(data)), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert re.match(r"0\.\d{3} \(95 % CI 0\.\d{3} to [01]\.\d{3}\)", printed[-2])
    answer = namespace["answer"]
    assert answer.decision in ("Parasitized", "Uninfected")
    assert printed[-1].startswith(answer.decision)
    assert sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert answer.in_domain in (True, False)  # a trained bundle has a domain guard
    assert namespace["heatmap"].shape == namespace["model"].spec.image_size
    assert (tmp_path / "runs" / "lenet" / "eval" / "metrics.json").is_file()
