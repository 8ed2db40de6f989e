#!/usr/bin/env bash
# The CLI end to end on one device (default cuda): phantoms -> train-autoencoder -> train (latent, rflow)
# -> resume -> sample -> HU NIfTI; and a pixel-space DDPM run -> sample. Tiny sizes: a check that
# ctdiff's own commands run on the device, not a benchmark. Usage: benchmarks/gpu_smoke.sh WORKDIR [DEVICE]
set -euo pipefail
W=${1:?work dir}; DEV=${2:-cuda}
py() { python -m ctdiff "$@" --no-progress 2>&1 | tail -n 3; }
python -m ctdiff phantom --out "$W/ph" --n 6 --shape 64 64 32 --seed 0 2>&1 | tail -n 1
py train-autoencoder --data "$W/ph" --out "$W/ae" --set steps=20 --set patch=[16,32,32] --set hu_window=[-1200,1500] --device "$DEV"
py train --config configs/demo-128.yaml --data "$W/ph" --out "$W/lat" --set model.autoencoder="$W/ae/autoencoder.pt" \
   --set train.epochs=2 --set train.preview_every=0 --device "$DEV"
py train --out "$W/lat" --resume --set train.epochs=3 --device "$DEV"
py sample --run "$W/lat" --n 2 --steps 5 --out "$W/lat-gen" --device "$DEV"
py train --config configs/demo.yaml --data "$W/ph" --out "$W/pix" --set train.epochs=1 --set train.preview_every=0 --device "$DEV"
py sample --run "$W/pix" --n 1 --steps 5 --out "$W/pix-gen" --device "$DEV"
python - "$W" <<'PY'
import sys, nibabel as nib, numpy as np
from pathlib import Path
for d in ("lat-gen", "pix-gen"):
    for f in sorted(Path(sys.argv[1], d).glob("*.nii.gz")):
        v = nib.load(f).get_fdata()
        print(d, f.name, v.shape, "HU range", round(float(v.min())), round(float(v.max())), "finite", bool(np.isfinite(v).all()))
PY
