"""Progress: JSON lines when piped (MEDSIGHT_PROGRESS=json), a tqdm bar for a person."""

from __future__ import annotations

import json

import pytest

from medsight import progress as progress_module
from medsight.progress import Progress, interactive, log_event, progress


def _events(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


@pytest.fixture
def json_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSIGHT_PROGRESS", "json")


def test_modes_decide_interactivity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSIGHT_PROGRESS", "json")
    assert interactive() is False
    monkeypatch.setenv("MEDSIGHT_PROGRESS", "bar")
    assert interactive() is True


def test_auto_mode_follows_whether_stderr_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSIGHT_PROGRESS", raising=False)

    class Stream:
        def __init__(self, tty: bool):
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(progress_module.sys, "stderr", Stream(True))
    assert interactive() is True
    monkeypatch.setattr(progress_module.sys, "stderr", Stream(False))
    assert interactive() is False


def test_log_event_writes_one_json_line_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    log_event("epoch", epoch=3, loss=0.25, path=progress_module)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "epoch" and event["epoch"] == 3 and event["loss"] == 0.25
    assert event["path"] == str(progress_module)  # non-JSON values become strings
    assert list(event)[0] == "event"


def test_json_mode_ends_with_a_done_event_and_no_bar(
    json_mode: None, capsys: pytest.CaptureFixture[str]
) -> None:
    items = list(range(7))
    seen = list(progress(items, "hash", unit="img"))
    assert seen == items
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "\r" not in captured.err and "img/s" not in captured.err  # no tqdm bar
    events = _events(captured.err)
    assert len(events) == 1
    done = events[0]
    assert done["event"] == "done" and done["task"] == "hash"
    assert done["done"] == 7 and done["total"] == 7  # the total inferred from len()
    assert done["seconds"] >= 0


def test_a_generator_has_no_total(json_mode: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert sum(progress((i for i in range(5)), "sum")) == 10
    (done,) = _events(capsys.readouterr().err)
    assert done["done"] == 5 and done["total"] is None


def test_an_explicit_total_wins(json_mode: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress([1, 2], "x", total=10)) == [1, 2]
    (done,) = _events(capsys.readouterr().err)
    assert done["total"] == 10 and done["done"] == 2


def test_nothing_done_writes_nothing(json_mode: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress([], "empty")) == []
    assert capsys.readouterr().err == ""


def test_json_progress_events_are_sparse(
    json_mode: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([0.0, 1.0, 11.0, 12.0, 25.0, 26.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    with Progress(4, "train", every_s=10.0) as bar:  # started at t=0
        bar.update()  # t=1: too soon
        bar.update(loss=0.5)  # t=11: reported
        bar.update()  # t=12: too soon
        bar.update(2)  # t=25: reported
    events = _events(capsys.readouterr().err)  # close at t=26
    assert [e["event"] for e in events] == ["progress", "progress", "done"]
    assert events[0] == {"event": "progress", "task": "train", "done": 2, "total": 4, "loss": 0.5}
    assert events[1]["done"] == 5
    assert events[2]["done"] == 5 and events[2]["seconds"] == 26.0


def test_bar_mode_draws_a_bar_and_writes_no_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDSIGHT_PROGRESS", "bar")
    with Progress(3, "predict", unit="img") as bar:
        assert bar._bar is not None
        bar.update(3, acc=1.0)
        assert bar._bar.n == 3 and bar.done == 3
    err = capsys.readouterr().err
    assert "predict" in err
    assert '"event"' not in err


def test_progress_iterates_every_item_in_bar_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDSIGHT_PROGRESS", "bar")
    assert list(progress("abc", "letters")) == ["a", "b", "c"]
    assert '"done"' not in capsys.readouterr().err
