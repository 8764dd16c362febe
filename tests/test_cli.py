"""The runner: parameters refused before execution, failures isolated, claims recorded."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from rlbook import cli, runner


def _nb(path: Path, body: str, params: str = 'profile = "smoke"  # profile\nseed = 0  # seed\nsteps = 3  # steps\nlr = 0.5  # lr\nname = "x"  # a name\nflag = False  # a flag\n'):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), p, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


CLAIM = (
    "from rlbook import claims\n"
    "claims.claim('c1', paper='p', measured='steps * lr', value=steps * lr, op='>=', threshold=1.0)\n"
)


@pytest.fixture()
def book(tmp_path, monkeypatch):
    """A two-part book with three notebooks: one good, one raising, one failing its claim."""
    papers = {"parts": [
        {"id": "01-a", "title": "Part A", "papers": [
            {"slug": "good", "title": "Good", "arxiv": "1", "year": 2024},
            {"slug": "broken", "title": "Broken", "arxiv": "2", "year": 2024},
            {"slug": "unwritten", "title": "Coming", "arxiv": "3", "year": 2024}]},
        {"id": "02-b", "title": "Part B", "papers": [
            {"slug": "weak", "title": "Weak", "arxiv": "4", "year": 2024}]},
    ]}
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "papers.yml").write_text(yaml.safe_dump(papers))
    _nb(tmp_path / "notebooks/01-a/good.ipynb", CLAIM + "print(profile, seed, steps, lr, name, flag)")
    _nb(tmp_path / "notebooks/01-a/broken.ipynb", "x = 1\nraise RuntimeError('boom')")
    _nb(tmp_path / "notebooks/02-b/weak.ipynb", CLAIM.replace("1.0", "100.0"))
    monkeypatch.setenv("RLBOOK_ROOT", str(tmp_path))
    return tmp_path


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_written_and_coming(book, capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    assert "[written] good" in out and "[coming ] unwritten" in out
    assert "3 of 4 notebooks written" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "good", "-p", "nosuch=1"], "unknown parameter(s) nosuch; valid: flag, lr, name, profile, seed, steps"),
        (["run", "good", "-p", "steps=ten"], "parameter steps must be int (default 3), got 'ten'"),
        (["run", "good", "-p", "lr=fast"], "parameter lr must be float"),
        (["run", "good", "-p", "flag=maybe"], "parameter flag must be bool"),
        (["run", "good", "-p", "steps"], "-p expects NAME=VALUE"),
        (["run", "good", "--profile", "huge"], "unknown profile 'huge': choose one of smoke, full"),
        (["run", "goood"], "unknown paper 'goood'. Did you mean: good?"),
        (["run", "unwritten"], "has no notebook yet"),
        (["run", "good", "-p", "seed=3"], "set seed with --seed"),
        (["run"], "name at least one notebook"),
    ],
)
def test_bad_input_is_refused_before_execution(book, capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert not (book / "_build").exists(), "nothing may execute"


def test_bad_cli_types_are_refused(book, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "good", "--seed", "-1"])
    assert e.value.code == 2
    assert "non-negative integer" in capsys.readouterr().err


def test_run_parallel_isolates_failures_and_records(book, capsys):
    code, out, _ = _run(capsys, "run", "good", "broken", "weak", "--jobs", "2", "--seed", "0", "--seed", "2",
                        "-p", "steps=4")
    assert code == 1
    recs = {(r["slug"], r["seed"]): r for r in runner.load_records()}
    assert len(recs) == 6
    good = recs[("good", 0)]
    assert good["status"] == "ok" and good["claims"][0]["passed"] and good["claims"][0]["value"] == 2.0
    assert good["parameters"] == {"profile": "smoke", "seed": 0, "steps": 4}
    assert good["seconds"] > 0 and good["peak_mb"] > 10 and good["versions"]["torch"] != "-"
    broken = recs[("broken", 2)]
    assert broken["status"] == "failed" and "RuntimeError: boom" in broken["error"] and "cell" in broken["error"]
    assert recs[("weak", 0)]["status"] == "claims-failed"
    assert "broken (seed 0) failed: cell" in out and "2 passed, 4 failed" in out
    # executed copy of the first seed keeps the repository's relative path; others go to runs/
    assert (book / "_build/stage/notebooks/01-a/good.ipynb").exists()
    assert (book / "_build/runs/seed2/notebooks/01-a/good.ipynb").exists()
    executed = nbformat.read(book / "_build/stage/notebooks/01-a/good.ipynb", 4)
    assert "smoke 0 4 0.5 x False" in json.dumps(executed.cells[-1].outputs)
    code, out, _ = _run(capsys, "ledger")
    assert code == 0 and "good" in out and "FAILS" in out


def test_module_entry_point(book):
    proc = subprocess.run([sys.executable, "-m", "rlbook", "run", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown paper 'nope'" in proc.stderr
