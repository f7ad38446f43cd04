"""Every file of the malformed-schedule corpus is refused by the CLI: exit code 2, one line on
stderr naming the offending field, nothing written."""
from pathlib import Path

import pytest

from cli import main

CORPUS = sorted((Path(__file__).resolve().parents[1] / "bad_schedules").glob("*.yaml"))


def _field(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# field: "), f"{path.name}: first line must name the expected field"
    return first.removeprefix("# field: ").strip()


def test_the_corpus_has_at_least_twelve_cases():
    assert len(CORPUS) >= 12


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_malformed_schedule_exits_2_with_one_line_naming_the_field(path, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["--task", "noisy_bowl", "--schedule", str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lodo-tune: error: ") and err.count("\n") == 1, err
    assert _field(path) in err
    assert path.name in err
    assert not run_dir.exists()
