"""Progress lines of long loops (psqe_ray.core.progress)."""

from __future__ import annotations

import io
import logging

import numpy as np

from psqe_ray.core.progress import EpochProgress, Progress
from psqe_ray.core.search import PROGRESS_ROWS, Searcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_every_ten_seconds_and_last_with_rate_and_time_left(caplog):
    clock = Clock()
    p = EpochProgress("stage2 training", every=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        clock.now += 30.0  # start-up: the first epoch carries it
        p.update(1, 100, 1.0)
        for epoch in range(2, 101):
            clock.now += 2.0  # then 2 s per epoch
            p.update(epoch, 100, 1.0 / epoch)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "stage2 training: epoch 1/100, loss 1.0000"  # no rate yet
    assert lines[1] == "stage2 training: epoch 6/100, loss 0.1667, 2.00 s/epoch, about 3:08 left"
    assert lines[-1] == "stage2 training: epoch 100/100, loss 0.0100, 2.00 s/epoch"
    # one line per 10 s of the 198 s after the first epoch, plus the first and the last
    assert len(lines) == 21 and p.lines == 21


def test_a_resumed_loop_times_only_the_epochs_it_ran(caplog):
    clock = Clock()
    p = EpochProgress("align pcmea training", every=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        clock.now += 30.0  # loading the checkpoint, then epoch 41
        p.update(41, 45)
        clock.now += 12.0
        p.update(42, 45)
    got = [r.getMessage() for r in caplog.records]
    assert got == ["align pcmea training: epoch 41/45",
                   "align pcmea training: epoch 42/45, 12.00 s/epoch, about 0:36 left"]


# -- counted work (Progress): rows, shards ------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_counted_work_logs_first_every_ten_seconds_and_last(caplog):
    clock = Clock()
    p = Progress("encode name texts", 5000, "rows", every=10.0, clock=clock, stream=io.StringIO())
    assert not p.tty  # a StringIO is no terminal: log lines
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        clock.now += 20.0  # the pool starts: the first batch carries it
        p.add(500)
        for _ in range(9):
            clock.now += 4.0  # then 500 rows per 4 s
            p.add(500)
    lines = [r.getMessage() for r in caplog.records]
    # rates from the start: 500 / 20 s, 2000 / 32 s, 3500 / 44 s, 5000 / 56 s
    assert lines == [
        "encode name texts: 500 of 5,000 rows (10%), 25.0 rows/s, about 3:00 left",  # first
        "encode name texts: 2,000 of 5,000 rows (40%), 62.5 rows/s, about 0:48 left",  # +12 s
        "encode name texts: 3,500 of 5,000 rows (70%), 79.5 rows/s, about 0:19 left",  # +12 s
        "encode name texts: 5,000 of 5,000 rows (100%), 89.3 rows/s, 0:56 in all",  # the last
    ]
    assert p.lines == 4 and p.draws == 0 and p.elapsed == 56.0
    p.add(0)  # nothing after the last
    assert len(caplog.records) == 4


def test_slow_units_show_seconds_per_unit(caplog):
    clock = Clock()
    p = Progress("stage2-global top-k left->right", 3, "shards", clock=clock,
                 stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        for step in (30.0, 40.0, 40.0):
            clock.now += step
            p.add(1)
    assert [r.getMessage() for r in caplog.records] == [
        "stage2-global top-k left->right: 1 of 3 shards (33%), 30.00 s/shard, about 1:00 left",
        "stage2-global top-k left->right: 2 of 3 shards (67%), 35.00 s/shard, about 0:35 left",
        "stage2-global top-k left->right: 3 of 3 shards (100%), 36.67 s/shard, 1:50 in all"]


def test_terminal_draws_one_self_updating_bar_then_logs_the_last_line(caplog):
    clock, term = Clock(), Terminal()
    p = Progress("encode images", 100, "rows", clock=clock, stream=term, redraw=0.25)
    assert p.tty
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        for _ in range(10):
            clock.now += 0.125  # 10 rows per 1/8 s: 80 rows/s
            p.add(10)
    out = term.getvalue()
    draws = out.split("\r")[1:]
    # the first update, then at most one per 0.25 s (at 30, 50, 70 and 90 rows), then cleared;
    # no newline: one line redrawn in place
    assert len(draws) == 6 and p.draws == 5 and "\n" not in out
    assert draws[0] == ("[##------------------] encode images: 10 of 100 rows (10%), 80.0 rows/s, "
                        "about 0:01 left\x1b[K")
    assert draws[1].startswith("[######--------------] encode images: 30 of 100 rows (30%), ")
    assert draws[-1] == "\x1b[K"  # the bar cleared before the last line is logged
    assert [r.getMessage() for r in caplog.records] == [
        "encode images: 100 of 100 rows (100%), 80.0 rows/s, 0:01 in all"]


def test_terminal_bar_cleared_when_the_work_stops_early_and_nothing_when_quiet(caplog):
    clock, term = Clock(), Terminal()
    p = Progress("encode images", 100, "rows", clock=clock, stream=term)
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        p.add(10)
        p.close()  # the pool failed
    assert term.getvalue().endswith("\r\x1b[K") and not caplog.records
    quiet = Terminal()
    q = Progress("encode images", 100, "rows", clock=clock, stream=quiet)
    with caplog.at_level(logging.WARNING, logger="psqe_ray.progress"):  # -q
        q.add(10)
        q.add(90)
        q.close()
    assert quiet.getvalue() == "" and not caplog.records


def test_epochs_draw_a_bar_on_a_terminal_too(caplog):
    clock, term = Clock(), Terminal()
    p = EpochProgress("stage2 training", clock=clock, stream=term)
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        for epoch in range(1, 5):
            clock.now += 1.0
            p.update(epoch, 4, 1.0 / epoch)
    assert term.getvalue().split("\r")[1:] == [
        "[#####---------------] stage2 training: epoch 1/4, loss 1.0000\x1b[K",
        "[##########----------] stage2 training: epoch 2/4, loss 0.5000, 1.00 s/epoch, "
        "about 0:02 left\x1b[K",
        "[###############-----] stage2 training: epoch 3/4, loss 0.3333, 1.00 s/epoch, "
        "about 0:01 left\x1b[K",
        "\x1b[K"]
    assert [r.getMessage() for r in caplog.records] == [
        "stage2 training: epoch 4/4, loss 0.2500, 1.00 s/epoch"]


def test_inprocess_search_reports_shards_and_gives_the_unsplit_answer(caplog):
    """``Searcher.topk(progress=...)``: an exact search cut into shards of PROGRESS_ROWS base
    rows for its progress, with the same bits as the one-shard search."""
    rng = np.random.default_rng(0)
    query = rng.standard_normal((300, 8)).astype(np.float32)
    base = rng.standard_normal((2 * PROGRESS_ROWS + 100, 8)).astype(np.float32)
    searcher = Searcher()
    plain = searcher.topk(query, base, 5)
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        shown = searcher.topk(query, base, 5, progress="test top-k")
    np.testing.assert_array_equal(plain[0], shown[0])
    np.testing.assert_array_equal(plain[1], shown[1])
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("test top-k: 1 of 3 shards (33%), ")
    assert lines[-1].startswith("test top-k: 3 of 3 shards (100%), ")


def test_a_bar_only_where_the_log_lines_reach_a_terminal(caplog):
    """Without a stream given, the bar goes to the terminal that the logger's handlers write
    to (the command line's stderr); log lines captured or sent to a file stay lines."""
    assert not Progress("x", 10).tty  # here: the test's capture
    logger = logging.getLogger("psqe_ray.progress")
    term, quiet = Terminal(), Terminal()
    for stream, level, drawn in ((io.StringIO(), logging.NOTSET, False),
                                 (quiet, logging.WARNING, False),  # no INFO lines there
                                 (term, logging.NOTSET, True)):
        handler = logging.StreamHandler(stream)
        handler.setLevel(level)
        logger.addHandler(handler)
        try:
            p = Progress("x", 10)
        finally:
            logger.removeHandler(handler)
        assert p.tty == drawn and (p.stream is term) == drawn


def test_another_log_line_clears_the_bar_first(caplog):
    """On the terminal's handler a log line of any logger starts on a cleared line, not after
    the bar's text; the next update draws the bar again."""
    term = Terminal()
    handler = logging.StreamHandler(term)
    root = logging.getLogger()
    root.addHandler(handler)
    clock = Clock()
    try:
        with caplog.at_level(logging.INFO, logger="psqe_ray"):
            p = Progress("encode images", 100, "rows", clock=clock)
            assert p.tty and p.stream is term
            clock.now += 1.0
            p.add(10)
            logging.getLogger("psqe_ray.other").info("a line of its own")
            clock.now += 1.0
            p.add(10)
    finally:
        root.removeHandler(handler)
    parts = term.getvalue().split("\r")
    assert parts[1].startswith("[##------------------] encode images: 10 of 100 rows")
    assert parts[2] == "\x1b[Ka line of its own\n"
    assert parts[3].startswith("[####----------------] encode images: 20 of 100 rows")
