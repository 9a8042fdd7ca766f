"""The ``triage`` command line. Training and export commands import torch lazily; serving never does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_ARTIFACTS = Path("artifacts")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _train(args: argparse.Namespace) -> int:
    from model.card import CARD_NAME
    from model.config import NetworkConfig, preprocessing_for
    from model.data import DataError
    from model.initialisation import StartError
    from model.train import TrainOptions, train

    if (args.out / CARD_NAME).exists() and not args.overwrite:
        # Its checkpoint and card would be replaced and no longer match the ONNX file beside them.
        print(
            f"triage train: {args.out} already holds a model ({CARD_NAME}); give another --out, or --overwrite to "
            "replace it (then export again)",
            file=sys.stderr,
        )
        return 2
    options = TrainOptions(
        data=args.data,
        epochs=args.epochs,
        out=args.out,
        seed=args.seed,
        n_train=args.n_train,
        precision=args.precision,
        device=args.device,
        crack_weight=args.crack_weight,
        twins=args.twins,
        start_from=args.start_from,
    )
    network = args.network or "scratch"
    try:
        preprocessing = preprocessing_for(network, args.jpeg_draft)
        config = NetworkConfig(network=network, global_pool=args.global_pool, preprocessing=preprocessing)
    except ValueError as exc:  # a combination the network does not have, e.g. a max-pooled backbone
        print(f"triage train: {exc}", file=sys.stderr)
        return 2
    try:
        # --from trains the folder's own network and preprocessing; --network, if given, must name it
        train(options, None if args.start_from and not args.network else config)
    except (DataError, StartError) as exc:
        print(f"triage train: {exc}", file=sys.stderr)
        return 2
    return 0


def _export(args: argparse.Namespace) -> int:
    from export.pipeline import ExportError, export_artifacts

    checkpoint = args.checkpoint or args.out / "triage_checkpoint.npz"
    if not checkpoint.is_file():
        print(f"triage export: {checkpoint} does not exist (train first)", file=sys.stderr)
        return 2
    try:
        export_artifacts(checkpoint, args.out)
    except ExportError as exc:
        print(f"triage export: {exc}", file=sys.stderr)
        return 2
    return 0


def _parity(rest: Sequence[str]) -> int:
    from export.parity import main as parity_main

    return parity_main(list(rest))


def _synth(args: argparse.Namespace) -> int:
    from model.synth import write_imagefolder

    counts = write_imagefolder(args.out, args.n, seed=args.seed, split=args.split)
    print(f"wrote {sum(counts.values())} photos to {args.out}: {counts}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from service.engine import ModelLoadError
    from service.predict_files import predict_files
    from service.settings import shipped_model_path

    model = args.model or shipped_model_path()
    try:
        return predict_files(args.files, as_json=args.json, url=args.url, model=model, api_key=args.api_key)
    except ModelLoadError as exc:
        print(f"triage predict: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from service.server import main as serve_main

    return serve_main(host=args.host, port=args.port)


def _explain(args: argparse.Namespace) -> int:
    from service.engine import ModelLoadError
    from service.explain_cli import explain_file
    from service.settings import shipped_model_path

    if args.out.exists() and not args.out.is_dir():
        print(f"triage explain: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        return explain_file(args.file, args.out, model=args.model or shipped_model_path())
    except ModelLoadError as exc:
        print(f"triage explain: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description="Route customer-support photos.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the network (synthetic photos, or --data DIR)")
    p.add_argument("--data", type=Path, help="ImageFolder tree DIR/screen_damage/*, DIR/general_returns/*")
    p.add_argument("--epochs", type=_positive, default=None, help="at most this many epochs (default from config)")
    p.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS, help="default: artifacts, the shipped model's folder")
    p.add_argument("--overwrite", action="store_true", help="replace the model --out already holds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=_positive, default=None, help="synthetic training photos (default from config)")
    p.add_argument(
        "--network",
        choices=("scratch", "efficientnet_lite0"),
        default=None,
        help="scratch (default): the CNN trained from random weights; efficientnet_lite0: the ImageNet-pretrained "
        "backbone, fine-tuned",
    )
    p.add_argument(
        "--from",
        dest="start_from",
        type=Path,
        default=None,
        metavar="DIR",
        help="fine-tune the model in DIR (e.g. artifacts) instead of starting afresh; keeps its network",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="forward passes in bf16 autocast or fp32 (auto: bf16 where the device has native bf16)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when torch sees a GPU")
    p.add_argument(
        "--global-pool",
        choices=("avg", "max"),
        default="avg",
        help="how the head pools the last stage over space (docs/BENCHMARKS.md compares them)",
    )
    p.add_argument(
        "--jpeg-draft",
        choices=("square", "letterbox"),
        default="square",
        help="how far JPEGs are reduced while decoding: to cover the square input or only the letterboxed photo",
    )
    p.add_argument(
        "--crack-weight",
        type=float,
        default=1.0,
        help="weight of the loss that teaches the last stage where generated cracks lie; 0 turns it off",
    )
    p.add_argument(
        "--twins",
        type=float,
        default=0.5,
        help="share of generated general_returns training photos that are intact twins of the damaged photos",
    )
    p.set_defaults(handler=_train)

    p = sub.add_parser("export", help="write and check the ONNX model, update the model card")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS)
    p.set_defaults(handler=_export)

    p = sub.add_parser("parity", help="compare PyTorch, ONNX Runtime, NumPy and onnx.reference layer by layer")
    p.set_defaults(handler=None)

    p = sub.add_parser("synth", help="write generated ticket photos as an ImageFolder tree")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=("train", "val", "test", "shifted"))
    p.set_defaults(handler=_synth)

    p = sub.add_parser("predict", help="route local photos (in-process, or through a service with --url)")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--url", help="route through a running service, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key", help="API key for --url (default: $TRIAGE_API_KEY)")
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model, artifacts/triage.onnx")
    p.set_defaults(handler=_predict)

    p = sub.add_parser("serve", help="start the HTTP service with the shipped model")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(handler=_serve)

    p = sub.add_parser("explain", help="write the explanation JSON and overlay PNGs for one photo")
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, default=Path("explanation"))
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model, artifacts/triage.onnx")
    p.set_defaults(handler=_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parity"]:
        return _parity(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
