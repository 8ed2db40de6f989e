"""The ``python -m ctdiff phantom`` command (its help line is :mod:`ctdiff.data.phantom`'s
docstring, which ``ctdiff.cli`` lists): options, validation, then :func:`write_cohort`.
"""

from __future__ import annotations

import math

from ctdiff.data.phantom.cohort import DEFAULT_FOV_MM, DEFAULT_SHAPE, write_cohort
from ctdiff.data.phantom.noise import NOISE_METHODS

# ------------------------------------------------------------------------------------- CLI
EXAMPLES = """\
  python -m ctdiff phantom --out data/phantom --n 28 --shape 128 128 32 --seed 0
  python -m ctdiff phantom --out /tmp/d --n 4                      # quick demo cohort
  python -m ctdiff phantom --out /tmp/noisy --n 8 --noise-hu 40 --force
  python -m ctdiff phantom --out /tmp/fbp --n 2 --noise-method fbp   # Poisson + FBP route (slower)
"""


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent unless --force)")
    parser.add_argument("--n", type=int, default=28, help="number of cases (default 28, like the thesis)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=list(DEFAULT_SHAPE),
        metavar=("X", "Y", "Z"),
        help="voxels along x y z (default 128 128 32)",
    )
    parser.add_argument(
        "--fov",
        type=float,
        nargs=3,
        default=list(DEFAULT_FOV_MM),
        metavar=("FX", "FY", "FZ"),
        help="field of view in mm (default 420 420 160); spacing = fov / shape",
    )
    parser.add_argument("--seed", type=int, default=0, help="cohort seed; case i uses SeedSequence([seed, i])")
    parser.add_argument("--noise-hu", type=float, default=20.0, help="noise SD in HU (default 20; 0 = no noise)")
    parser.add_argument(
        "--noise-method",
        choices=NOISE_METHODS,
        default="correlated",
        help="correlated: FBP-shaped noise spectrum (fast, default); fbp: simulated projections "
        "with Poisson noise reconstructed by FBP (slow); none: noise-free",
    )
    parser.add_argument("--no-table", action="store_true", help="leave out the scanner table")
    parser.add_argument("--force", action="store_true", help="empty and reuse a non-empty output folder")


def run(args) -> int:
    from ctdiff import validate
    from ctdiff.outputs import check_output

    n = validate.integer(args.n, "--n", low=1, high=100_000)
    shape = validate.integers(args.shape, "--shape", low=2, high=4096)
    fov = validate.numbers(args.fov, "--fov", low=0, low_open=True, high=10_000)
    validate.number(args.noise_hu, "--noise-hu", low=0, high=10_000)
    validate.seed(args.seed)
    # a phantom holds ~15 float32/float64 work arrays per voxel (labels, HU, texture, noise, blur)
    validate.fits_in_memory(64.0 * math.prod(shape), f"a {shape[0]}x{shape[1]}x{shape[2]} phantom", "--shape")
    check_output(args.out, command="phantom", force=args.force)
    manifest = write_cohort(
        args.out,
        n=n,
        shape=shape,
        seed=args.seed,
        noise_hu=args.noise_hu,
        force=args.force,
        progress=True,
        fov_mm=fov,
        noise_method=args.noise_method,
        table=not args.no_table,
    )
    print(f"wrote {args.n} synthetic phantom case(s) and {manifest}")
    return 0
