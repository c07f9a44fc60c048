"""core.train.train_model's speed per epoch: ``on_speed`` is told each epoch's training images per second, before
the checkpoint and ``on_epoch``, and the result keeps them; the epoch logs stay the losses only."""

from __future__ import annotations

import time
from typing import Any

from core.datasets import Dataset
from core.kinds.train import TrainParams
from core.train import train_model


def test_each_epoch_reports_its_images_per_second(digits_300: Dataset) -> None:
    calls: list[tuple[str, int, Any]] = []

    def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
        calls.append(("epoch", epoch, logs))
        return False

    started = time.perf_counter()
    result = train_model(TrainParams(model="conv_ae", epochs=2, filters=(8, 16, 32), validation_split=0.2),
                         digits_300, on_epoch=on_epoch,
                         checkpoint=lambda e, model: calls.append(("checkpoint", e, None)),
                         on_speed=lambda e, speed: calls.append(("speed", e, speed)))
    elapsed = time.perf_counter() - started
    assert [(what, e) for what, e, _ in calls] == [("speed", 1), ("checkpoint", 1), ("epoch", 1),
                                                    ("speed", 2), ("checkpoint", 2), ("epoch", 2)]
    speeds = [v for what, _, v in calls if what == "speed"]
    assert result.images_per_second == speeds
    trained = int(len(digits_300.x_train) * 0.8)  # the images an epoch trains on: 20% are held out
    assert all(trained / elapsed < s < 1e7 for s in speeds), (speeds, elapsed)  # each epoch took less than all
    assert all("images_per_second" not in logs for what, _, logs in calls if what == "epoch")
