"""Progress lines of long loops (psqe_ray.core.progress)."""

from __future__ import annotations

import logging

from psqe_ray.core.progress import EpochProgress


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
