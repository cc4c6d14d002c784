"""Live output: ``status --watch`` redraws only on a terminal, stops when the sweep
ends; progress bars; colour only on a terminal and never with NO_COLOR."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from coordinator import live
from coordinator.control import cancel_sweep
from coordinator.term import Line, table
from storage import sweeps as sweep_store
from storage.db import make_engine, transact
from tests.coordinator_tests.finished_sweep import cli
from tests.support.configs import write_config


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def frames(*texts: str):  # type: ignore[no-untyped-def]
    """A render function returning ``texts`` in turn; the last one ends the watch."""
    seq = list(texts)

    def render() -> tuple[str, bool]:
        text = seq.pop(0)
        return text, not seq

    return render


def test_watch_on_a_pipe_prints_changes_only_and_stops_at_the_end() -> None:
    out, naps = io.StringIO(), []
    last = live.watch(frames("a", "a", "b", "b"), out, 2.0, sleep=naps.append)
    assert last == "b"
    assert out.getvalue() == "a\n\nb\n"
    assert "\033" not in out.getvalue()
    assert naps == [2.0, 2.0, 2.0]


def test_watch_on_a_terminal_clears_and_redraws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Terminal()
    live.watch(frames("1 running", "2 done"), out, 0.5, sleep=lambda _: None)
    text = out.getvalue()
    assert text.count(live.CLEAR) == 2
    assert "Ctrl-C" in text and "\033[32mdone\033[0m" in text  # coloured status words


def test_no_color_keeps_the_terminal_plain_but_still_redraws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    live.watch(frames("3 done"), out, 1.0, sleep=lambda _: None)
    assert out.getvalue().startswith(live.CLEAR)
    assert "\033[" not in out.getvalue().replace(live.CLEAR, "")


def test_step_bar_redraws_on_a_terminal_and_prints_lines_elsewhere() -> None:
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        bar = live.StepBar(stream)
        for i in range(4):
            bar("evaluating", i, 3)
        bar.close()
    drawn = tty.getvalue()
    assert drawn.count("\r") == 4 and "\033" not in drawn and drawn.endswith("3/3\n")
    assert pipe.getvalue().splitlines() == [
        f"evaluating      {live.bar(0, 3)} 0/3", f"evaluating      {live.bar(3, 3)} 3/3"]


def test_a_redrawn_line_blanks_what_a_longer_one_left() -> None:
    out = io.StringIO()
    line = Line(out)
    line.draw("stage 0 12/100")
    line.draw("stage 1 0/9")
    line.end()
    assert out.getvalue() == "\rstage 0 12/100\rstage 1 0/9   \n"


def test_one_table_formatter_aligns_columns_with_or_without_a_rule() -> None:
    assert table(["a", "long"], [["xyz", "1"]]) == "a    long\n---  ----\nxyz  1   "
    assert table(["a"], [], rule=False) == "a"


@pytest.mark.integration
def test_status_watch_of_an_ended_sweep_prints_once_and_returns(tmp_path: Path,
                                                                sqlite_url: str) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    launched = cli("launch", str(cfg), "--db", sqlite_url, "--redis", "redis://127.0.0.1:1/0")
    name = launched.output.strip().splitlines()[-1]  # saved, not enqueued (no Redis there)
    engine = make_engine(sqlite_url)
    sweep_id = transact(engine, lambda s: sweep_store.get_sweep(s, name)).id
    assert cancel_sweep(engine, None, sweep_id) == 6
    res = cli("status", name, "--watch", "--interval", "0.1", "--db", sqlite_url)
    assert res.exit_code == 0, res.output
    assert res.output.count(f"sweep {name}") == 1 and "cancelled" in res.output
    assert "\033" not in res.output


def test_run_progress_names_the_stage_as_status_does(tmp_path: Path, sqlite_url: str) -> None:
    from coordinator.progress import ProgressPrinter
    from coordinator.report import progress, status_text

    cfg = write_config(tmp_path / "c.yaml")
    launched = cli("launch", str(cfg), "--db", sqlite_url, "--redis", "redis://127.0.0.1:1/0")
    name = launched.output.strip().splitlines()[-1]  # saved in its stage 0, not enqueued
    engine = make_engine(sqlite_url)
    sweep_id = transact(engine, lambda s: sweep_store.get_sweep(s, name)).id
    out = io.StringIO()
    printer = ProgressPrinter(out)
    printer.update(progress(engine, sweep_id))
    printer.close()
    n_stages = transact(engine, lambda s: sweep_store.get_sweep(s, sweep_id)).n_stages
    assert out.getvalue().startswith(f"stage 0 (of {n_stages}) ")
    assert "stage 0" in status_text(engine, sweep_id) and "stage 1" not in status_text(
        engine, sweep_id)
