"""`proxyless export` and `proxyless evaluate`: a trained network as a deployable file,
verified and timed; and the test accuracy of any model file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxyless.cli.options import (
    add_model_data_args,
    min_time,
    positive_float,
    positive_int,
    threads_int,
)
from proxyless.config_io import clip
from proxyless.deploy.evaluate import evaluate_file, predict_files
from proxyless.deploy.export import export_and_check
from proxyless.deploy.int8 import CALIBRATION_IMAGES
from proxyless.deploy.verify import DEFAULT_TOLERANCE, verification_failure
from proxyless.deploy.write import FORMATS
from proxyless.latency.timer import cpu_model


def add_export_parser(sub: Any) -> None:
    """`proxyless export` on the CLI's subparsers."""
    p = sub.add_parser("export", help="write a trained network as ONNX or TorchScript, "
                                      "verified against PyTorch and timed on this CPU")
    p.add_argument("model", help="model.pt, or the folder of a `train` or `run`")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="default onnx")
    p.add_argument("--out", required=True,
                   help="file to write (e.g. model.onnx, or model.torchscript)")
    p.add_argument("--int8", action="store_true",
                   help="also write <out stem>.int8.onnx: ONNX Runtime static int8 "
                        f"quantization calibrated on {CALIBRATION_IMAGES} training images")
    add_model_data_args(p)
    p.add_argument("--verify-images", type=positive_int, default=1000,
                   help="test images the export must agree with PyTorch on (default 1000)")
    p.add_argument("--tolerance", type=positive_float, default=DEFAULT_TOLERANCE,
                   help=f"largest |logit difference| accepted (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--threads", type=threads_int, default=1,
                   help="CPU threads for the measured latencies (default 1)")
    p.add_argument("--latency-time", type=min_time, default=2.0,
                   help="seconds of round-robin latency timing (default 2; 0: 50 rounds)")
    p.add_argument("--table", default=None,
                   help="latency table for the predicted latency (default: a run folder's "
                        "own latency_table.json); one measured here also gets the model "
                        "measured on its setting and time base")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_export(args: argparse.Namespace) -> int:
    """Export, verify, quantize (--int8) and time; exit code 1 when verification fails
    (the file is kept for inspection)."""
    report = export_and_check(args.model, args.out, args.format, args.int8, args.data,
                              args.data_dir, args.verify_images, args.tolerance, args.threads,
                              args.latency_time, args.table)
    print(json.dumps(report, indent=2) if args.json else describe_export(report))
    if not report["verified"]:
        print(f"proxyless: error: {verification_failure(report)}; the file was kept at "
              f"{report['export']} for inspection", file=sys.stderr)
        return 1
    return 0


def describe_export(report: dict[str, Any]) -> str:
    """The text report: export, verification, accuracy, latency."""
    n, fmt = report["verify_images"], report["format"]
    diff = report["max_abs_diff"]
    lines = [f"exported {report['architecture']} -> {report['export']} ({fmt}, "
             f"{report['export_bytes'] / 1024:.0f} KiB)",
             f"{'verified' if report['verified'] else 'verification FAILED'} on {n:,} test "
             f"images of {report['data']}: max |logit difference| "
             f"{'n/a (not finite)' if diff is None else f'{diff:.2e}'} (limit "
             f"{report['tolerance']:g}), same top-1 on {report['same_top1']:,}/{n:,}",
             f"test top-1: PyTorch {report['top1_pytorch']:.2f}%, {fmt} "
             f"{report['top1_export']:.2f}%"]
    int8 = report["int8"]
    if int8 is not None:
        lines.append(f"int8 -> {int8['file']} ({int8['bytes'] / 1024:.0f} KiB): test top-1 "
                     f"{int8['top1']:.2f}% (fp32 {report['top1_export']:.2f}%), same top-1 as "
                     f"fp32 on {int8['same_top1_as_fp32']:,}/{n:,}")
    lines.append(f"batch-1 latency, {report['threads']} thread(s), {cpu_model()}, as measured "
                 "now:")
    for name, ms in report["latency_ms"].items():
        lines.append(f"  {name + ' (measured)':<28}{ms:>9.3f} ms   IQR "
                     f"{report['latency_iqr_ms'][name]:.3f}")
    return "\n".join(lines + describe_table(report))


def describe_table(report: dict[str, Any]) -> list[str]:
    """The latency table's lines: its prediction, labelled with the table's setting, beside
    the model measured on that setting where the table is this machine's; a table of another
    device is said not to be comparable with the figures above."""
    if report["table"] is None:
        return [f"  {'predicted (table)':<28}      n/a (give --table)"]
    setting = report["table_setting"]
    batch = setting.get("batch", 1)
    unit = "ms" if batch == 1 else f"ms per batch of {batch}"
    comparable = report["table_comparable"]
    note = "on the table's time base" if comparable else "not comparable with this CPU's figures"
    lines = [f"latency table {report['table']} ({_setting_text(setting)}), {note}:",
             f"  {'predicted (table)':<28}{report['predicted_ms']:>9.3f} {unit}"]
    if comparable:
        lines.append(f"  {'measured (table setting)':<28}{report['measured_on_table_ms']:>9.3f}"
                     f" {unit}   the PyTorch model timed as the table was (raw ms / "
                     f"machine speed x{report['speed_factor']:.3f})")
    else:
        lines.append(f"  no measurement: {report['table_not_comparable_because']}")
    return lines


def _setting_text(setting: dict[str, Any]) -> str:
    """"device: backend, N thread(s), batch B", of the fields the table records."""
    parts = [setting.get("backend"),
             f"{setting['threads']} thread(s)" if "threads" in setting else None,
             f"batch {setting.get('batch', 1)}"]
    text = ", ".join(part for part in parts if part)
    return f"{setting['device']}: {text}" if "device" in setting else text


def add_evaluate_parser(sub: Any) -> None:
    """`proxyless evaluate` on the CLI's subparsers."""
    p = sub.add_parser("evaluate", help="test accuracy of a model file, run folder or export")
    p.add_argument("model", help="model.pt, a train or run folder, or an exported .onnx or "
                                 "TorchScript (.torchscript) file")
    add_model_data_args(p)
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--images", type=positive_int, default=None,
                   help="evaluate the first N test images (default: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu; ONNX "
                                                   "files run on the CPU)")
    p.add_argument("--trust-code", action="store_true",
                   help="run a TorchScript file, whose code runs when loaded and called: only "
                        "one you made (e.g. with `proxyless export`)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_file(args.model, args.data, args.data_dir, args.images, args.batch_size,
                           args.device, args.trust_code)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"test top-1 {result['test_top1']:.2f}%  loss {result['test_loss']:.4f}  on "
          f"{result['test_images']:,} test images of {result['data']} "
          f"({clip(result['data_source'])})")
    print(f"model: {result['model']} ({result['format']}, {result['architecture']})")
    return 0


def add_predict_parser(sub: Any) -> None:
    """`proxyless predict` on the CLI's subparsers."""
    p = sub.add_parser("predict", help="classify image files with a model file or export")
    p.add_argument("model", help="model.pt, a train or run folder, or an exported .onnx or "
                                 "TorchScript (.torchscript) file")
    p.add_argument("images", nargs="+", help="image files (cropped as the model's data was)")
    p.add_argument("--top", type=positive_int, default=1, help="classes shown per image")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--trust-code", action="store_true",
                   help="run a TorchScript file (only one you made)")
    p.add_argument("--json", action="store_true", help="print one JSON list")


def cmd_predict(args: argparse.Namespace) -> int:
    results = predict_files(args.model, args.images, args.top, args.device, args.trust_code)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        best = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in result["top"])
        print(f"{result['image']}: {best}")
        if "note" in result:
            print(f"proxyless: note: {result['image']} is {result['note']}", file=sys.stderr)
    return 0
