"""Blinded rendering: one display grid, same-size PNGs for both cohorts, display orientation kept."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ctdiff.data.display import PLANES, WINDOW_PRESETS, apply_window, plane_slice
from ctdiff.data.volume import Volume
from eval.review import render, store


def test_choose_grid_takes_smallest_shape_and_median_extent():
    grid = render.choose_grid([(32, 32, 8), (16, 16, 10), (24, 20, 12)], [(1, 1, 3), (2, 2, 2.4), (1.5, 1.5, 2)])
    assert grid.shape == (16, 16, 8)
    # extents x: 32, 32, 36 -> median 32 / 16; y: 32, 32, 30 -> 32 / 16; z: 24, 24, 24 -> 24 / 8
    assert grid.spacing == pytest.approx((2.0, 2.0, 3.0))
    big = render.choose_grid([(1024, 900, 700)], [(0.5, 0.5, 0.5)])
    assert big.shape == (512, 512, 512)


def test_image_size_follows_plane_aspect():
    grid = render.DisplayGrid((16, 16, 8), (2.0, 2.0, 3.0))
    assert grid.image_size("axial") == (512, 512)
    assert grid.image_size("coronal") == (384, 512)  # 24 mm tall, 32 mm wide
    assert grid.image_size("sagittal", width=256) == (192, 256)


def test_both_cohorts_give_identical_png_sizes_and_dtype(rng):
    real = Volume.from_spacing(rng.normal(40, 20, (32, 32, 8)), (1.0, 1.0, 3.0))
    synthetic = Volume.from_spacing(rng.normal(40, 80, (16, 16, 10)), (2.0, 2.0, 2.4))
    grid = render.choose_grid([real.shape, synthetic.shape], [real.spacing, synthetic.spacing])
    arrays = [render.to_grid(v, grid) for v in (real, synthetic)]
    assert [a.shape for a in arrays] == [grid.shape, grid.shape]
    assert [a.dtype for a in arrays] == [np.int16, np.int16]
    for plane in PLANES:
        pngs = [render.render_png(a, grid, plane, grid.middle(plane), "soft tissue") for a in arrays]
        images = [Image.open(io.BytesIO(p)) for p in pngs]
        assert images[0].size == images[1].size == grid.image_size(plane)[::-1]  # PIL: (width, height)
        assert [im.mode for im in images] == ["L", "L"]
        assert all(not {k for k in im.info if k not in ("dpi",)} for im in images)  # no text chunks
        assert pngs[0] != pngs[1]


def test_rendering_keeps_display_orientation_and_window(rng):
    array = rng.normal(0, 300, (16, 12, 6)).astype(np.float32)
    grid = render.DisplayGrid((16, 12, 6), (1.0, 1.0, 1.0))
    cached = render.to_grid(Volume.from_spacing(array, (1, 1, 1)), grid)
    assert np.array_equal(cached, np.rint(array).astype(np.int16))  # same grid: no resampling
    for plane, width in (("axial", 16), ("coronal", 16), ("sagittal", 12)):
        ww, wl = WINDOW_PRESETS["bone"]
        expected = apply_window(plane_slice(cached, plane, 2), ww, wl)
        assert np.array_equal(render.render_slice(cached, grid, plane, 2, "bone", width=width), expected)


def test_to_grid_resamples_whole_field_of_view():
    # a left/right split volume keeps its split in the middle after shrinking to half size
    array = np.zeros((32, 8, 4), dtype=np.float32)
    array[16:] = 1000
    out = render.to_grid(Volume.from_spacing(array, (1, 1, 1)), render.DisplayGrid((16, 8, 4), (2, 1, 1)))
    assert out.shape == (16, 8, 4)
    assert np.all(out[:7] == 0) and np.all(out[9:] == 1000)


def test_cached_arrays_of_a_session_are_alike(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts)
    reader = store.find_reader(db_url, store.add_reader(db_url, sid, "A"))
    arrays = [
        store.load_case_array(db_url, reader.reader_id, store.reader_case(db_url, reader.reader_id, i).code)[0]
        for i in range(reader.total)
    ]
    assert {(a.shape, a.dtype.str, a.nbytes) for a in arrays} == {((16, 16, 8), "<i2", 16 * 16 * 8 * 2)}
    # a lost cache is rebuilt for every case alike
    for f in store.cache_root(db_url).rglob("*.npy"):
        f.unlink()
    assert store.ensure_cache(db_url, sid) == 6
    assert len(list(store.cache_root(db_url).rglob("*.npy"))) == 6


def test_png_byte_size_carries_no_information_about_content():
    """Smooth, noisy, blank and saturated images of one size give PNGs of exactly one byte size;
    with compression the noisy one would be several times larger than the blank one."""
    rng = np.random.default_rng(0)
    h, w = 300, 512
    images = [
        np.zeros((h, w), np.uint8),
        np.full((h, w), 255, np.uint8),
        rng.integers(0, 256, (h, w), dtype=np.uint8),
        np.tile(np.arange(w, dtype=np.uint8), (h, 1)),
    ]
    sizes = {len(render.png_bytes(im)) for im in images}
    assert len(sizes) == 1 and sizes.pop() > h * w  # uncompressed: at least one byte per pixel
    for im in images:  # and still a faithful PNG
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(render.png_bytes(im)))), im)


def test_every_case_of_a_session_renders_to_the_same_byte_size(db_url, cohorts):
    from eval.review import store

    sid = store.create_session(db_url, "s", *cohorts)
    reader = store.find_reader(db_url, store.add_reader(db_url, sid, "A"))
    sizes: dict[tuple, set] = {}
    for pos in range(reader.total):
        code = store.reader_case(db_url, reader.reader_id, pos).code
        array, grid = store.load_case_array(db_url, reader.reader_id, code)
        for plane in reader.planes:
            for window in reader.windows:
                for index in (0, grid.middle(plane), grid.n_slices(plane) - 1):
                    sizes.setdefault((plane,), set()).add(len(render.render_png(array, grid, plane, index, window)))
    assert all(len(s) == 1 for s in sizes.values()), sizes
