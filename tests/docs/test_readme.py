"""The README's front page, run as pasted: its shell commands, its Python session, its set-up.

Every ``$ command`` line of a ```text block in README.md (and in docs/streaming.md, whose shell
example uses the same files) runs through bash in a scratch copy of the repository's layout: the
committed ``exported/`` folder and ``build/examples/`` written by tools/examples.py (what ``make
examples`` runs), with the virtualenv's bin first on PATH (what ``source .venv/bin/activate`` does).
The ``>>>`` blocks run as one doctest session. Outputs are compared where they are deterministic:

- gru-predict's CSV and error lines, and the Python session: the same text, numbers within a
  relative 1e-5 (the committed model's probabilities; on this project's machine they are equal);
- gru-verify: exit code, verdict line, and per family the count and the ok column;
- gru-build / gru-export (training and export times vary): exit code, the stage lines, the data and
  schedule lines, the verification table's families, counts and ok column, and the ``wrote`` line.

A command no rule knows fails the test, so a new README example needs a rule here.
Imports: numpy, pipeline.runtime (through the doctest). Reads: README.md, docs/streaming.md, Makefile,
exported/. Writes: tmp_path only (the examples' inputs and the models the examples build).
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
SHELL_PAGES = [README, ROOT / "docs" / "streaming.md"]
BIN = Path(sys.executable).parent
TRAINING_TOOLS = ("gru-build", "gru-export")  # need TensorFlow and train or convert: slow

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_STAGE = re.compile(r"^\[\d+/\d+\] ")
_DETERMINISTIC = ("  train ", "  schedule: ", "  backend ")  # data, schedule and graph: no timing, no training


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def shell_examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every ``$ `` line of the ```text blocks."""
    examples: list[tuple[str, list[str]]] = []
    for lang, body in fenced_blocks(text):
        if lang != "text":
            continue
        current = None  # output lines belong to the block's last command
        for line in body.splitlines():
            if line.startswith("$ "):
                current = (line[2:], [])
                examples.append(current)
            elif current is not None:
                current[1].append(line)
    return examples


def all_shell_examples() -> list[tuple[str, str, list[str]]]:
    return [(page.name, cmd, out) for page in SHELL_PAGES for cmd, out in shell_examples(page.read_text())]


def same_text(want: str, got: str, rtol: float = 1e-5) -> bool:
    """Equal up to whitespace runs, numbers within ``rtol`` (integers and zeros exactly)."""
    want, got = " ".join(want.split()), " ".join(got.split())
    if want == got:
        return True
    if _NUMBER.sub("#", want) != _NUMBER.sub("#", got):
        return False
    w = np.array([float(x) for x in _NUMBER.findall(want)])
    g = np.array([float(x) for x in _NUMBER.findall(got)])
    return bool(np.allclose(g, w, rtol=rtol, atol=0.0))


def table_rows(lines: list[str]) -> dict[str, tuple[str, str]]:
    """Markdown table rows of an equivalence table: family -> (count, ok column)."""
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 3 and cells[0] != "family":
            rows[cells[0]] = (cells[1], cells[-1])
    return rows


# ------------------------------------------------------------------------------------------ set-up


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory laid out like the repository root after ``make examples``.

    The examples' public data (ItalyPowerDemand) comes from the aeon wheel of the ``ucr`` extra, which
    ``make examples`` and ``make test`` install; a venv without it (``make export`` alone) skips."""
    pytest.importorskip("aeon", reason="the README examples read ItalyPowerDemand from the ucr extra (make examples)")
    root = tmp_path_factory.mktemp("readme")
    (root / "exported").symlink_to(ROOT / "exported")  # read only: gru-predict and the Predictor read it
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "examples.py"), "--skip-keras",
                          "--out", str(root / "build" / "examples")],
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    return root


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` through bash as pasted, the virtualenv's bin first on PATH."""
    assert (BIN / "gru-predict").exists(), f"no gru-predict next to {sys.executable}: install the project first"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=900, cwd=cwd, env=env)


def test_readme_has_the_examples_this_test_runs():
    """The parser finds the front page's commands and sessions (else every other test would pass on nothing)."""
    text = README.read_text()
    tools = [cmd.split()[0] for _, cmd, _ in all_shell_examples()]
    for tool in ("gru-build", "gru-predict", "gru-export", "gru-verify"):
        assert tool in tools, f"README has no '$ {tool} ...' example"
    assert sum(body.lstrip().startswith(">>> ") for lang, body in fenced_blocks(text) if lang == "python") >= 2


def test_setup_commands_exist():
    """The set-up block's commands: make targets the Makefile has, and the activate script's path."""
    setup = "\n".join(body for lang, body in fenced_blocks(README.read_text()) if lang == "bash")
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^make (\S+)", setup, re.M)
    assert {"export", "test", "examples"} <= set(targets), targets
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"Makefile has no target {target!r}"
    assert re.search(r"^examples:.*\n\t.*tools/examples\.py", makefile, re.M), "make examples must run tools/examples.py"
    assert "source .venv/bin/activate" in setup
    assert "build/examples/" in README.read_text()


# ------------------------------------------------------------------------------------ the commands


def _params():
    params = []
    for i, (page, cmd, out) in enumerate(all_shell_examples()):
        marks = [pytest.mark.slow] if cmd.split()[0] in TRAINING_TOOLS + ("gru-verify",) else []
        params.append(pytest.param(cmd, out, marks=marks, id=f"{page}:{i}:{cmd.split()[0]}"))
    return params


@pytest.fixture(scope="module")
def keras_examples(workdir) -> Path:
    """seq.keras and seq_sample.npz next to the other inputs (trains the tiny model: needs TensorFlow)."""
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "examples.py"), "--out", str(workdir / "build" / "examples")],
                         capture_output=True, text=True, timeout=900, cwd=workdir)
    assert res.returncode == 0, res.stderr[-2000:]
    return workdir


def check_training_tool(want: list[str], got: str) -> None:
    got_lines = got.splitlines()
    stages = [line for line in want if _STAGE.match(line)]
    assert stages, "the pasted output shows no stage lines"
    pos = 0
    for line in stages + [w for w in want if w.startswith(_DETERMINISTIC)]:
        hits = [i for i, g in enumerate(got_lines) if g == line]
        assert hits, f"missing output line {line!r}"
        if line in stages:
            assert hits[0] >= pos, f"stage {line!r} out of order"
            pos = hits[0]
    wrote = [w for w in want if w.startswith("wrote ")]
    assert len(wrote) == 1
    folder = re.match(r"wrote (?:\.\.\./)?(\S+) in ", wrote[0]).group(1)
    assert re.search(rf"^wrote \S*{re.escape(folder)} in [\d.]+ s \(max \|Keras - ONNX\| = [\d.e+-]+\)$", got, re.M), got[-1500:]
    check_table(want, got_lines)


def check_table(want: list[str], got_lines: list[str]) -> None:
    expected, actual = table_rows(want), table_rows(got_lines)
    assert expected, "the pasted output shows no equivalence table rows"
    for family, (count, ok) in expected.items():
        assert family in actual, f"family {family!r} missing from {sorted(actual)}"
        assert actual[family] == (count, ok), (family, actual[family], (count, ok))


@pytest.mark.parametrize("command,want", _params())
def test_command_output(command, want, workdir, request):
    tool = command.split()[0]
    if tool in TRAINING_TOOLS or tool == "gru-verify":
        request.getfixturevalue("keras_examples")
    if tool == "gru-verify":  # checks the folder the gru-export example writes
        export = [cmd for _, cmd, _ in all_shell_examples() if cmd.startswith("gru-export ")]
        folder = re.search(r"--out (\S+)", export[0]).group(1)
        if not (workdir / folder / "manifest.json").exists():
            assert run(export[0], workdir).returncode == 0
    res = run(command, workdir)
    shown = "\n".join(want)
    if tool in TRAINING_TOOLS:
        assert res.returncode == 0, res.stderr[-2000:]
        check_training_tool(want, res.stdout + res.stderr)
    elif tool == "gru-verify":
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.strip().splitlines()[-1] == want[-1]
        check_table(want, res.stdout.splitlines())
    elif tool in ("gru-predict", "head", "printf"):  # the predictions, the running probabilities, the errors
        if "$?" not in command:
            assert res.returncode == 0, res.stderr[-2000:]
        got = res.stdout + res.stderr  # an error line goes to stderr, echo "exit N" to stdout
        if not same_text(shown, res.stdout) and not same_text(shown, res.stderr + res.stdout):
            pytest.fail(f"{command}\nREADME shows:\n{shown}\ngot:\n{got}")
    else:
        pytest.fail(f"no rule for {tool!r}: add one to tests/docs/test_readme.py")


# ---------------------------------------------------------------------------- the Python session


class _NumbersChecker(doctest.OutputChecker):
    def check_output(self, want, got, optionflags):
        return super().check_output(want, got, optionflags) or same_text(want, got)


def test_python_session(workdir, monkeypatch):
    """The ``>>>`` blocks of the README, in order, as one session run from the repository root."""
    monkeypatch.chdir(workdir)
    text = "\n".join(body for lang, body in fenced_blocks(README.read_text())
                     if lang == "python" and body.lstrip().startswith(">>> "))
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", str(README), 0)
    assert len(test.examples) >= 6
    runner = doctest.DocTestRunner(checker=_NumbersChecker(), optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda s: sys.stdout.write(s))
    assert runner.failures == 0, "a README Python example printed something else (diff above)"


def test_same_text_compares_numbers_relatively():
    """The comparison catches a stale figure the runtime's 1e-6 absolute contract would let through."""
    assert same_text("0,0.000561058521,0", "0,0.000561058521,0")
    assert same_text("array([5.6105852e-04, 1.8866533e-01])", "array([5.6105850e-04,  1.8866533e-01])")
    assert not same_text("0,0.00056107674,0", "0,0.000561058521,0")  # 1.8e-8 apart, 3e-5 relative
    assert not same_text("0,0.1,0", "0,0.1,1")
    assert not same_text("id,probability", "id,prob")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
