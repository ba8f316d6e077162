"""GIFs people look at: what is written is what was rendered."""

import numpy as np
from PIL import Image

from wm_jax.viz import save_gif


def read_gif(path) -> np.ndarray:
    frames = []
    with Image.open(path) as im:
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
    return np.stack(frames)


def test_gif_of_few_colour_frames_is_exact(tmp_path):
    """Frames of <= 256 colours (each its own set, as game frames differ) come back pixel for pixel, upscaled 2x."""
    rng = np.random.default_rng(0)
    frames = []
    for t in range(5):
        palette = rng.integers(0, 256, (200, 3), dtype=np.uint8)  # 200 colours, new ones every frame
        frames.append(palette[rng.integers(0, 200, (16, 24))])
    out = read_gif(save_gif(np.stack(frames), tmp_path / "a.gif"))
    assert out.shape == (5, 32, 48, 3)
    np.testing.assert_array_equal(out[:, ::2, ::2], np.stack(frames))
    np.testing.assert_array_equal(out[:, 1::2, 1::2], np.stack(frames))


def test_gif_of_many_colour_frames_stays_close(tmp_path):
    """More than 256 colours (4,096 here, spread over the whole cube): quantised by an octree, every pixel within a
    few levels. (PIL's default median cut: mean 3.7 but single pixels off by up to 165; octree: mean 5.3, max 38.)"""
    y, x = np.mgrid[0:64, 0:64]
    frames = np.stack([np.stack([(4 * x + t) % 256, (4 * y) % 256, (2 * (x + y) + 3 * t) % 256], axis=-1)
                       for t in range(4)]).astype(np.uint8)
    assert len(np.unique(frames[0].reshape(-1, 3), axis=0)) > 256
    out = read_gif(save_gif(frames.astype(np.float32) / 255.0, tmp_path / "b.gif", scale=1)).astype(int)
    err = np.abs(out - frames.astype(int))
    assert err.mean() < 6 and err.max() <= 48
