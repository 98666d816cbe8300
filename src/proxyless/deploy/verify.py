"""An export checked against the PyTorch model it came from: the same logits, the same top-1."""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_TOLERANCE = 1e-4                   # max |logit difference| a faithful export shows


def compare_logits(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray,
                   tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """How far an export's logits are from the PyTorch model's on the same input: the largest
    absolute difference (None when either holds a NaN or inf), the images whose top-1 agrees,
    and both test top-1s. `verified`: within `tolerance` and the same top-1 on every image."""
    difference = float(np.max(np.abs(reference - exported), initial=0.0))
    finite = bool(np.isfinite(difference))
    same = int(np.sum(reference.argmax(1) == exported.argmax(1)))
    return {"verify_images": len(labels), "max_abs_diff": difference if finite else None,
            "tolerance": tolerance, "same_top1": same,
            "verified": finite and difference <= tolerance and same == len(labels),
            "top1_pytorch": top1(reference, labels), "top1_export": top1(exported, labels)}


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Test top-1 in percent."""
    return 100.0 * float(np.mean(logits.argmax(1) == labels)) if len(labels) else 0.0


def verification_failure(report: dict[str, Any]) -> str:
    """What verification found wrong, in one line."""
    problems = []
    diff = report["max_abs_diff"]
    if diff is None or diff > report["tolerance"]:
        shown = "not finite" if diff is None else f"{diff:.2e}"
        problems.append(f"max |logit difference| {shown} exceeds {report['tolerance']:g}")
    if report["same_top1"] != report["verify_images"]:
        problems.append(f"top-1 differs on {report['verify_images'] - report['same_top1']} "
                        f"of {report['verify_images']} images")
    return f"the {report['format']} export does not match the PyTorch model: " + \
        "; ".join(problems)
