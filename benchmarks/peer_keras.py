"""The second peer: Keras 3 `fit` on the torch backend, with the same layers, rows, batch size and epochs as
dltrain (installed by the `bench` extra; benchmarks/performance.py skips it where keras is missing).

The model is built layer for layer as dltrain's presets build it (conf/model/mlp.yaml, conf/model/cnn.yaml),
compiled with Adam (lr 1e-3), sparse categorical cross-entropy on logits and accuracy, and fitted with
validation every epoch, as a Keras user writes it.
"""

from __future__ import annotations

import os
import time


def keras_available() -> bool:
    """Whether keras imports here (with the torch backend, which must be chosen before the first import)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return False
    return keras.backend.backend() == "torch"


def keras_seconds(model_name: str, train_xy, val_xy, num_classes: int, batch_size: int, epochs: int) -> float:
    """Seconds from the first epoch's start to the end of fit (every epoch with its validation)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.config.set_image_data_format("channels_first")  # dltrain's images are (C, H, W)
    (x, y), (x_val, y_val) = [(a.numpy(), b.numpy()) for a, b in (train_xy, val_xy)]
    model = keras.Sequential([keras.Input(shape=x.shape[1:]), *_layers(model_name, num_classes)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    class Clock(keras.callbacks.Callback):
        started = ended = None

        def on_epoch_begin(self, epoch, logs=None):
            self.started = self.started or time.perf_counter()

        def on_train_end(self, logs=None):
            self.ended = time.perf_counter()

    clock = Clock()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val), verbose=0,
              callbacks=[clock])
    return clock.ended - clock.started


def _layers(model_name: str, num_classes: int) -> list:
    from keras import layers

    if model_name == "mlp":
        return [layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(64, activation="relu"),
                layers.Dense(num_classes)]
    if model_name == "cnn":
        return [layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
                layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
                layers.Dense(128, activation="relu"), layers.Dropout(0.5), layers.Dense(num_classes)]
    raise ValueError(f"no Keras peer for model={model_name}")

