"""benchmarks/bench_spaces.py: the CPU worker for another config / latent width, and the GPU results'
summary and tables (the measurements themselves need CUDA; these check what is made of them)."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
bench = runpy.run_path(str(REPO / "benchmarks" / "bench_spaces.py"), run_name="bench_spaces")


def _row(space, size, status="measured", phase="train", gib=1.0, secs=0.5, **extra):
    x, y, z = (int(v) for v in size.split("x"))
    row = {"space": space, "phase": phase, "size": size, "voxels": x * y * z, "status": status, "gpu_peak_gib": gib}
    if status == "measured":
        row["gpu_seconds"] = secs
    return {**row, **extra}


def _gpu(rows):
    return {
        "device": "cuda",
        "gpu": {"name": "H100 (test)", "total_gib": 79.2, "torch": "x"},
        "model": "configs/demo.yaml",
        "latent_channels": 4,
        "rows": rows,
        "largest_trained": bench["largest_trained"](rows),
    }


def test_largest_trained_is_the_biggest_measured_step_and_the_smallest_failure():
    rows = [
        _row("pixel", "512x512x128", gib=48.4),
        _row("pixel", "512x512x192", gib=72.6, find_max=True),
        _row("pixel", "512x512x384", status="out of memory", gib=75.0, find_max=True),
        _row("pixel", "512x512x256", status="out of memory", gib=71.6, find_max=True),
        _row("pixel", "512x512x512", phase="eval", gib=99.0),  # not a training step: ignored
        _row("latent", "512x512x2048", gib=12.5, find_max=True),
        _row("latent", "512x512x1024", gib=6.2, find_max=True),
    ]
    got = bench["largest_trained"](rows)
    assert got["pixel"] == {"largest_trained": "512x512x192", "largest_gib": 72.6, "first_not_trained": "512x512x256"}
    assert got["latent"] == {"largest_trained": "512x512x2048", "largest_gib": 12.5, "first_not_trained": None}


def test_the_cpu_table_takes_its_gpu_column_from_the_gpu_results():
    cpu = {
        "rows": [
            {
                "space": "latent",
                "phase": "train",
                "size": "512x512x128",
                "status": "measured",
                "cpu_seconds": 5.33,
                "seconds": 7.9,
                "peak_rss_mb": 1771.5,
                "network_input": [1, 4, 32, 128, 128],
                "command": "c1",
            },
            {"space": "pixel", "phase": "train", "size": "512x512x128", "status": "not run (memory)", "command": "c2"},
            {
                "space": "wavelet",
                "phase": "eval",
                "size": "128x128x32",
                "status": "measured",
                "cpu_seconds": 0.46,
                "seconds": 6.8,
                "peak_rss_mb": 563.2,
                "command": "c3",
            },
        ],
        "projection_80gb": {},
    }
    gpu = _gpu(
        [
            _row("latent", "512x512x128", gib=0.807, secs=0.0731),
            _row("pixel", "512x512x128", status="out of memory", gib=70.1),
            _row("latent", "512x512x128", gib=5.0, secs=9.0, find_max=True),  # a find-max step: not the table's row
        ]
    )
    lines = bench["markdown"](cpu, gpu).splitlines()
    latent = next(line for line in lines if line.startswith("| latent | train | 512x512x128 |"))
    assert "| 0.073 s, 0.81 GiB |" in latent and "| 5.33 | 7.9 | 1.73 |" in latent
    pixel = next(line for line in lines if line.startswith("| pixel | train | 512x512x128 |"))
    assert "| out of memory (H100 (test)) |" in pixel
    wavelet = next(line for line in lines if line.startswith("| wavelet | eval | 128x128x32 |"))
    assert "| not measured on GPU |" in wavelet
    # without GPU results the column says so, as before
    assert "| not yet measured on GPU |" in bench["markdown"](cpu).splitlines()[2]


def test_the_gpu_table_marks_cold_steps_and_out_of_memory():
    text = bench["markdown_gpu"](
        _gpu(
            [
                _row("wavelet", "512x512x1024", gib=53.373, secs=3.78, find_max=True),
                _row("wavelet", "512x512x1536", status="out of memory", gib=74.805, find_max=True),
            ]
        )
    )
    assert "| wavelet | train | 512x512x1024 |  | 3.780 (one cold step) | 53.37 |" in text
    assert "| wavelet | train | 512x512x1536 |  | out of memory | 74.8 when it ran out |" in text
    assert "- wavelet: 512x512x1024 (53.4 GiB); 512x512x1536 did not" in text


def test_cpu_worker_measures_another_config_and_latent_width():
    row = bench["worker"](
        "latent", "32x32x32", "train", threads=1, reps=0, config="configs/demo-128.yaml", latent_channels=16
    )
    assert row["network_input"] == [1, 16, 8, 8, 8]
    assert row["autocast"] == "fp32"  # bf16 autocast is CUDA-only, as in ctdiff train
    demo = bench["worker"]("latent", "32x32x32", "eval", threads=1, reps=0)
    assert demo["network_input"] == [1, 4, 8, 8, 8]
    assert row["parameters"] > 3 * demo["parameters"]  # demo-128's U-Net (7.1 M) against demo's (1.8 M)
    enc = bench["worker"]("latent", "32x32x32", "encode", threads=1, reps=0, latent_channels=16)
    assert enc["latent_shape"] == [1, 16, 8, 8, 8] and enc["seconds"] > 0


def test_a_space_with_no_training_step_that_fit_says_so():
    text = bench["markdown_gpu"](_gpu([_row("pixel", "512x512x128", status="out of memory", gib=70.1)]))
    assert "- pixel: no size trained (512x512x128 did not)" in text


def test_rows_already_in_the_cpu_table_are_not_repeated_below_it():
    gpu = _gpu(
        [
            _row("latent", "512x512x128", gib=0.807, secs=0.0731),
            _row("latent", "512x512x128", phase="encode", gib=0.45, secs=0.44),
            _row("latent", "512x512x128", gib=0.79, secs=0.0735, find_max=True),
        ]
    )
    text = bench["markdown_gpu"](gpu, skip={("latent", "train", "512x512x128")})
    rows = [line for line in text.splitlines() if line.startswith("| latent |")]
    assert rows == [
        "| latent | encode | 512x512x128 |  | 0.440 | 0.45 |",
        "| latent | train | 512x512x128 |  | 0.073 (one cold step) | 0.79 |",
    ]
