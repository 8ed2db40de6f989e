"""Multi-plane 2D FID with a RadImageNet ResNet-50 (randomly initialised stand-in weights here),
checked against the Fréchet formula with scipy.linalg.sqrtm on the same features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from ctdiff.data.io import find_cases, read_volume
from eval.features import create
from eval.features.radimagenet import load_resnet50, resnet50_2d
from eval.report import build_report
from eval.report.fid2d import METRIC_NAMES, multiplane_fid, plane_indices

N = 4


def test_architecture_is_torchvision_resnet50_without_the_head():
    net = resnet50_2d()
    state = net.state_dict()
    # torchvision resnet50: 25,557,032 parameters, of which the fc head has 2048 * 1000 + 1000
    assert sum(p.numel() for p in net.parameters()) == 25_557_032 - 2_049_000
    assert "layer1.0.downsample.0.weight" in state and "layer1.0.downsample.0.bias" not in state
    assert state["conv1.weight"].shape == (64, 3, 7, 7) and state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert net.conv1.stride == (2, 2)
    out = net.eval()(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 2048)


def test_weights_loading_accepts_torchvision_format_and_names_what_is_missing(tmp_path):
    torch.manual_seed(0)
    net = resnet50_2d()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, 2048)
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    loaded = load_resnet50(tmp_path / "w.pth")
    assert torch.equal(loaded.state_dict()["layer3.1.conv2.weight"], net.state_dict()["layer3.1.conv2.weight"])
    del state["module.layer2.0.conv1.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="layer2.0.conv1.weight"):
        load_resnet50(tmp_path / "bad.pth")


def test_plane_grouping():
    names = ["axial0", "axial1", "coronal0", "coronal1", "sagittal0", "sagittal1"]
    g = plane_indices(names)
    assert [g[p].tolist() for p in ("axial", "coronal", "sagittal")] == [[0, 1], [2, 3], [4, 5]]
    assert list(plane_indices(["slice0", "slice1"])) == ["all"]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory, ph):
    root = tmp_path_factory.mktemp("fid2d")
    torch.manual_seed(0)
    weights = root / "RadImageNet-ResNet50.pth"
    torch.save(resnet50_2d().state_dict(), weights)  # randomly initialised, same architecture
    real = ph.write_folder(root / "real", ph.phantom_arrays(41, N))
    gen = ph.write_folder(root / "gen", ph.blur(ph.phantom_arrays(42, N), 1.5))
    return {"root": root, "weights": weights, "real": real, "gen": gen}


def frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)) with scipy's sqrtm.

    Both covariances live in the span of the centred samples (a few dozen of 2048 dimensions), so
    they are written in an orthonormal basis Q of that span first: S = Q C Q^T, and S_a S_b has the
    eigenvalues of C_a C_b. This keeps sqrtm exact (no 2000 numerically-zero eigenvalues) and fast.
    """
    xa, xb = a - a.mean(0), b - b.mean(0)
    q, _ = np.linalg.qr(np.concatenate([xa, xb]).T)
    ca = (xa @ q).T @ (xa @ q) / (len(a) - 1)
    cb = (xb @ q).T @ (xb @ q) / (len(b) - 1)
    covmean = linalg.sqrtm(ca @ cb)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean).real)


def test_multiplane_fid_equals_the_scipy_frechet_formula_on_the_same_features(cohorts, ph):
    settings = {
        **ph.SMALL_SETTINGS,
        "fid2d_weights": str(cohorts["weights"]),
        "fid2d_slices_per_plane": 3,
        "fid2d_image_size": 64,
    }
    report = build_report(
        cohorts["real"], cohorts["gen"], metrics="radimagenet", device="cpu", use_cache=False, settings=settings
    )
    m = report["metrics"]
    assert list(m) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert m[name]["reason"] is None and m[name]["value"] > 0, (name, m[name]["reason"])
    ex = create("radimagenet-resnet50-2d", weights=cohorts["weights"], slices_per_plane=3, image_size=64)
    feats = {}
    for k in ("real", "gen"):
        rows = [ex.extract(read_volume(p)) for p in find_cases(cohorts[k])]
        names = rows[0][0]
        feats[k] = np.stack([r[1] for r in rows]).reshape(N, len(names), -1)
    assert names[:3] == ["axial0", "axial1", "axial2"] and len(names) == 9
    per_plane = []
    for plane in ("axial", "coronal", "sagittal"):
        idx = [i for i, n in enumerate(names) if n.startswith(plane)]
        ref = frechet_scipy(feats["real"][:, idx].reshape(-1, 2048), feats["gen"][:, idx].reshape(-1, 2048))
        assert m[f"fid_radimagenet_{plane}"]["value"] == pytest.approx(ref, rel=1e-5), plane
        per_plane.append(ref)
    assert m["fid_radimagenet_2d"]["value"] == pytest.approx(np.mean(per_plane), rel=1e-5)
    # the direct function on the same arrays, and a same-set FID of ~0
    direct = multiplane_fid(feats["real"], feats["gen"], plane_indices(names))
    assert direct["fid_radimagenet_2d"] == pytest.approx(np.mean(per_plane), rel=1e-5)
    assert multiplane_fid(feats["real"], feats["real"], plane_indices(names))["fid_radimagenet_2d"] == pytest.approx(
        0.0, abs=1e-6
    )


def test_not_computed_without_weights(cohorts, ph, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    report = build_report(
        cohorts["real"], cohorts["gen"], metrics="fid_radimagenet_2d", use_cache=False, settings=ph.SMALL_SETTINGS
    )
    m = report["metrics"]["fid_radimagenet_2d"]
    assert m["value"] is None and "--fid2d-weights" in m["reason"] and "RadImageNet-ResNet50.pth" in m["reason"]
    missing = build_report(
        cohorts["real"],
        cohorts["gen"],
        metrics="fid_radimagenet_2d",
        use_cache=False,
        settings={**ph.SMALL_SETTINGS, "fid2d_weights": str(tmp_path / "nope.pth")},
    )
    assert "no such file" in missing["metrics"]["fid_radimagenet_2d"]["reason"]


def test_slice_extractors_key_their_cache_by_the_weights_file(tmp_path):
    """Both 2D FID extractors put the weights file's SHA-256 (first 16 hex digits) into their settings,
    so features from other weights are never read back from the cache."""
    import hashlib

    from eval.features.inception import InceptionSlices
    from eval.features.radimagenet import RadImageNetSlices

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not really weights" * 100_000)
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    for cls in (InceptionSlices, RadImageNetSlices):
        assert cls(weights=weights).settings()["weights_sha256"] == expected
    weights.write_bytes(b"other")
    assert RadImageNetSlices(weights=weights).settings()["weights_sha256"] != expected
