"""Per-volume radiomics features exactly as ``frd-score`` (FRD v1) extracts them.

The extractor calls frd-score's own ``get_feature_extractor`` (its packaged v1 YAML: Original +
LoG + Wavelet images, ~464 features, pyradiomics-bhklab backend) and ``process_image_mask_pair``
(full-volume mask with one corner voxel off, numeric diagnostics kept), one file at a time, with
two of pyradiomics' hot spots replaced by bit-identical faster code
(:mod:`eval.features.radiomics_speedups`). The report caches these vectors and feeds them to
:func:`eval.metrics.distribution.frd_v1`, which replays frd-score's normalisation and Fréchet
distance — so the number equals ``python -m frd_score REAL_DIR GEN_DIR`` on the same ``.nii.gz``
folders.

frd-score reads the file itself (SimpleITK, its own geometry); inputs that are not ``.nii.gz``
(``.nii``, DICOM, ``.npy``) are first written to a temporary int16 ``.nii.gz`` by ctdiff.data.io.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.errors import InputError
from eval.features.base import FeatureExtractor

FRD_VERSION = "v1"


def _frd():
    from frd_score import frd

    return frd


def image_dim_of_shape(shape) -> int:
    """frd-score's 2D/3D rule (``_detect_image_dimensionality``): 3D when there is more than one slice."""
    return 3 if len(shape) == 3 and int(shape[2]) > 1 else 2


class RadiomicsFRD(FeatureExtractor):
    name = "radiomics-frd-v1"  # its key in eval.features.registry
    input = "file"

    def __init__(self, image_dim: int = 3, single_thread: bool = False):
        self.image_dim = int(image_dim)
        self.single_thread = bool(single_thread)
        self._extractor = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_extractor"] = None  # rebuilt by setup() in each worker
        return state

    def settings(self) -> dict[str, Any]:
        frd = _frd()
        import frd_score
        import radiomics

        config = frd.V1_CONFIG_3D if self.image_dim == 3 else frd.V1_CONFIG_2D
        return {
            "frd_version": FRD_VERSION,
            "image_dim": self.image_dim,
            "frd_score": frd_score.__version__,
            "pyradiomics": getattr(radiomics, "__version__", "?"),
            "config_sha256": hashlib.sha256(Path(config).read_bytes()).hexdigest()[:16],
        }

    def steps_per_item(self) -> int:
        """Progress steps per scan: the shape step, then one per image type (Original, each LoG sigma,
        each wavelet band): 14 for frd-score v1 in 3D. Each takes tens of seconds on 2 cores."""
        import yaml

        frd = _frd()
        config = yaml.safe_load(Path(frd.V1_CONFIG_3D if self.image_dim == 3 else frd.V1_CONFIG_2D).read_text())
        n = 1
        for image_type, options in (config.get("imageType") or {}).items():
            if image_type == "LoG":
                n += len((options or {}).get("sigma") or config.get("setting", {}).get("sigma") or [1])
            elif image_type == "Wavelet":
                n += 2**self.image_dim  # one decomposition level: every low/high-pass combination of the axes
            else:
                n += 1
        return n

    def _hook_steps(self, extractor) -> None:
        """Count pyradiomics' shape step and each image type's feature computation as progress steps
        (wrapping this extractor instance's methods; pyradiomics itself is not changed)."""
        compute_shape, compute_features = extractor.computeShape, extractor.computeFeatures

        def shape(*args, **kwargs):
            out = compute_shape(*args, **kwargs)
            self.step()
            return out

        def features(*args, **kwargs):
            out = compute_features(*args, **kwargs)
            self.step()
            return out

        extractor.computeShape, extractor.computeFeatures = shape, features

    def setup(self) -> None:
        if self._extractor is not None:
            return
        frd = _frd()
        frd._ensure_radiomics()
        from eval.features import radiomics_speedups

        radiomics_speedups.install()  # same features in 0.4-0.8x the time (see that module)
        logging.getLogger("radiomics").setLevel(logging.ERROR)
        frd.setVerbosity(60)
        if self.single_thread:
            # one ITK thread per worker process; several workers already fill the cores
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        self._extractor = frd.get_feature_extractor(frd_version=FRD_VERSION, image_dim=self.image_dim)
        self._hook_steps(self._extractor)

    def extract(self, item) -> tuple[list[str], np.ndarray]:
        self.setup()
        path = Path(item)
        if path.is_file() and path.name.lower().endswith(".nii.gz"):
            return self._extract_nifti(path, path)
        from ctdiff.data.io import read_volume, write_nifti

        volume = read_volume(path)
        with tempfile.TemporaryDirectory(prefix="ctdiff-frd-") as tmp:
            nii = Path(tmp) / "case.nii.gz"
            write_nifti(volume, nii)
            return self._extract_nifti(nii, path)

    def _extract_nifti(self, nii: Path, source: Path) -> tuple[list[str], np.ndarray]:
        frd = _frd()
        try:
            result = frd.process_image_mask_pair(
                (nii, None), resize_size=None, feature_extractor=self._extractor, verbose=False, frd_version=FRD_VERSION
            )
        except Exception as exc:  # pyradiomics raises many types on odd images
            raise InputError(f"radiomics extraction failed ({type(exc).__name__}: {exc})", source) from None
        if result is None:
            raise InputError("radiomics extraction skipped (empty mask)", source)
        values, named, _ = result
        return list(named.keys()), np.asarray(values, dtype=np.float64)
