"""The conv autoencoder trained by a plain Keras script, no farm: the baseline of train_throughput.py.

Keras' defaults throughout (model.compile and fit with numpy arrays), on the backend KERAS_BACKEND names. Prints one
JSON line: the backend, per-epoch end times (time.time()), the parameter count and the final loss.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402


def build(z_dim: int) -> keras.Model:
    inp = keras.Input((28, 28, 1))
    x = inp
    for f, s in ((32, 1), (64, 2), (128, 2)):
        x = layers.LeakyReLU()(layers.Conv2D(f, 3, strides=s, padding="same")(x))
    z = layers.Dense(z_dim)(layers.Flatten()(x))
    y = layers.Reshape((7, 7, 128))(layers.Dense(7 * 7 * 128)(z))
    for f, s in ((128, 2), (64, 2), (32, 1)):
        y = layers.LeakyReLU()(layers.Conv2DTranspose(f, 3, strides=s, padding="same")(y))
    out = layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid")(y)
    return keras.Model(inp, out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--z-dim", type=int, default=16)
    args = ap.parse_args()
    keras.utils.set_random_seed(0)
    with np.load(args.data) as f:
        x = (f["x_train"][: args.images].astype("float32") / 255.0)[..., None]
    model = build(args.z_dim)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["mse"])
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            ends.append(time.time())

    start = time.time()
    hist = model.fit(x, x, epochs=args.epochs, batch_size=128, validation_split=0.1, shuffle=True, verbose=0,
                     callbacks=[Clock()])
    print(json.dumps({"backend": keras.backend.backend(), "start": start, "epoch_ends": ends,
                      "params": model.count_params(), "loss": hist.history["loss"][-1]}))


if __name__ == "__main__":
    main()
