"""New faces from the fitted region of the latent space (the seed's claim), on the Olivetti faces, through the farm.

    .venv/bin/python benchmarks/face_findings.py [--data ../shared/data/olivetti_faces.npz] [--epochs N] [--json F]

Runs examples/faces-sampling.yaml on the embedded default in a fresh folder: face_ae (z256) on the 320 training
faces, encode, and 200 faces from each sampler (normal, uniform_box, fitted_normal, pca_ellipsoid). Prints the
codes' analysis (radii against a standard normal's sqrt(256) = 16, the components holding 90% and 99% of the
variance, dead code units) and each sampler's scores beside the real test faces' and their reconstructions':
fid_latent (Fréchet distance of the codes to the real faces'), pca_residual (distance from the training faces'
eigenface subspace: the face-likeness score), nn_dist (to the nearest training face: memorisation shows as ~0),
recon_drift. The claim holds where fitted_normal and pca_ellipsoid score near the real faces and normal does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.mnist_findings import run  # noqa: E402

SPEC = REPO / "examples" / "faces-sampling.yaml"
SAMPLERS = ["normal", "uniform_box", "fitted_normal", "pca_ellipsoid"]
KEYS = ["fid_latent", "pca_residual", "nn_dist", "recon_drift"]


def faces_spec(epochs: int | None = None) -> dict[str, Any]:
    import yaml

    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    if epochs is not None:
        next(j for j in spec["jobs"] if j["kind"] == "train")["params"]["epochs"] = epochs
    return spec


def report(final: dict[str, dict[str, float]], seconds: dict[str, float]) -> list[str]:
    ae, codes = final["face_ae"], final["codes"]
    lines = [f"face_ae z256: test MSE {ae['test_mse']:.4f}, dead code units {ae['dead_code_units']:.0f} "
             f"({seconds['face_ae']:.0f} s)",
             f"codes: radius median {codes['radius_median']:.2f} (a standard normal's: 16.0), components for 90% / "
             f"99% of the variance {codes['n_components_90']:.0f} / {codes['n_components_99']:.0f}, per-component "
             f"std {codes['std_min']:.3f}-{codes['std_max']:.3f}",
             f"{'set':<16}" + "".join(f"{k:>14}" for k in KEYS)]
    rows = {smp: final[f"faces[sampler={smp}]"] for smp in SAMPLERS}
    ref = rows["fitted_normal"]
    for label, prefix in (("real test", "ref_test_"), ("reconstructed", "ref_recon_")):
        lines.append(f"{label:<16}" + "".join(f"{ref[prefix + k]:>14.4f}" for k in KEYS))
    for smp, row in rows.items():
        lines.append(f"{smp:<16}" + "".join(f"{row[k]:>14.4f}" for k in KEYS))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "olivetti_faces.npz")
    ap.add_argument("--epochs", type=int, default=None, help="face_ae's epochs (default: the example's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if not args.data.is_file() or args.data.name != "olivetti_faces.npz":
        ap.error(f"--data: no olivetti_faces.npz at {args.data}")
    (batch,) = run(args.data.resolve(), [faces_spec(args.epochs)])
    for line in report(batch["final"], batch["seconds"]):
        print(line)
    print(f"the whole batch: {batch['wall']:.0f} s wall")
    if args.json is not None:
        args.json.write_text(json.dumps(batch, indent=2))


if __name__ == "__main__":
    main()
