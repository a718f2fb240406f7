"""README's Quick start, run word for word: every `$ ` command of its console blocks, then its Python block,
in one empty folder, in the order the README gives them.

Its bash block (scripts/setup.sh, activating .venv) is what CI's scripts/test.sh has already done before this
test runs, so it is not run again; the commands find `genexport` on PATH as an activated .venv provides it.
The README's pasted output is compared where it is deterministic: the generated texts (`->` lines), the parity
verdict count, the version line, everything the Python blocks print, with numbers masked (timings, tokens/s,
versions, scores).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Shell output lines the test holds the README to (the rest carry paths, timings or wrapping of local paths).
CHECKED = re.compile(r"->|^parity:|^genexport \d")


@dataclass
class Step:
    kind: str  # "shell" or "python"
    code: str
    expected: list[str] = field(default_factory=list)


def quickstart_steps(readme: str) -> tuple[list[str], list[Step]]:
    """The Quick start's install commands (bash blocks) and its runnable steps (console and python blocks)."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    install: list[str] = []
    steps: list[Step] = []
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    for i, (language, body) in enumerate(blocks):
        if language == "bash":
            install += [line.split("#")[0].strip() for line in body.splitlines() if line.split("#")[0].strip()]
        elif language == "console":
            for line in body.splitlines():
                if line.startswith("$ "):
                    steps.append(Step("shell", line[2:]))
                elif steps:
                    steps[-1].expected.append(line)
        elif language == "python":
            answer = blocks[i + 1][1].splitlines() if i + 1 < len(blocks) and blocks[i + 1][0] == "text" else []
            steps.append(Step("python", body, answer))
    return install, steps


def _mask(text: str) -> str:
    return " ".join(re.sub(r"\d+", "N", text).split())


def test_readme_quick_start_runs_word_for_word(tmp_path: Path, demo_cache: Path) -> None:
    install, steps = quickstart_steps((ROOT / "README.md").read_text(encoding="utf-8"))
    assert install == ["bash scripts/setup.sh", "source .venv/bin/activate"]
    assert (ROOT / "scripts" / "setup.sh").is_file()
    assert [s.code.split()[:2] for s in steps if s.kind == "shell"] == [
        ["genexport", "--version"], ["genexport", "beam"], ["genexport", "run"], ["genexport", "triton"]]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "80",
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GENEXPORT_CACHE": str(demo_cache)}
    checked = 0
    for step in steps:
        argv = ["bash", "-c", step.code] if step.kind == "shell" else [sys.executable, "-c", step.code]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{step.code}\n{output}"
        for line in step.expected:
            if step.kind == "python" or CHECKED.search(line.strip()):
                assert _mask(line) in _mask(output), f"README shows {line!r} after {step.code!r}; got:\n{output}"
                checked += 1
    assert checked >= 16  # version, parity count, 6 graph/generate lines, 2 run texts, run_export's 6, served answer
