"""`showroom distill`, through the `showroom` command: it trains and exports a student, and its failures
are failures (exit status and one line), never a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_distill_support import tiny_config, tiny_rooms, tiny_teacher  # noqa: F401 (fixtures)

from showroom_ros.apps import cli
from showroom_ros.apps.cli import main


def test_distill_trains_and_exports_a_student_that_loads(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    from showroom_ros.models import Fast3R

    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_rooms, tiny_teacher, tmp_path / "out")))
    argv = ["distill", str(config), "--json", "--set", "train.max_steps=2", "--set", "train.progress=true"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    summary = json.loads(printed.out)  # stdout is the run's summary, and only that
    assert summary["export"] == str(tmp_path / "out" / "student") and summary["step"] == 2
    assert "training: 2/2 steps (100%), in " in printed.err  # the progress, on stderr (not a terminal: lines)
    student = Fast3R.from_pretrained(tmp_path / "out" / "student")
    teacher = Fast3R.from_pretrained(tiny_teacher)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_distill_help_is_distills_own(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "--help"]) == 0
    assert "--validate" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"root": "nope"}}, "data.root: folder not found"),
        ({"train": {"max_steps": 0}}, "train.max_steps: must be >= 1, got 0"),
        ({"model": {"teacher": "no/such/teacher"}}, "Fast3R checkpoint not found"),
    ],
)
def test_a_failing_distill_fails_with_one_line(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    change: dict,
    message: str,
) -> None:
    raw = tiny_config(tiny_rooms, tiny_teacher, tmp_path / "out")
    for section, values in change.items():  # paths are under tmp_path
        raw[section].update({k: str(tmp_path / v) if isinstance(v, str) else v for k, v in values.items()})
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    code = main(["distill", str(config), "--quiet"])
    error = capsys.readouterr().err
    assert code != 0 and message in error and "Traceback" not in error, (code, error)
    assert not (tmp_path / "out" / "student").exists()


def test_a_missing_distill_module_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.FORWARDED, "distill", (("showroom_ros.no_such_distillation", "main"),))
    assert main(["distill", "--help"]) == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "`showroom distill` is not available" in error and "showroom_ros[distill]" in error
    assert "Traceback" not in error
