"""The ``triage`` command line. Training and export commands import torch lazily; serving never does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_ARTIFACTS = Path("artifacts")
WEAK_MODEL = 3  # exit status of ``triage train`` when the model it wrote has warnings (without --allow-weak)


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with ``(default: ...)``, unless it says its default in words already (a ``None``
    default stands for one chosen later) or a default means nothing there: a flag, a required option."""

    # The hook argparse's own ArgumentDefaultsHelpFormatter overrides; tests/service/test_cli.py renders every
    # option's help through it, so a change in argparse shows there.
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.nargs == 0 or action.required:
            return text
        return super()._get_help_string(action)


PHOTOS_HELP = "folder of real photos the generator builds on (default: the Debian set `make photos` installs)"


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
        name=args.name,
        version=args.version,
        photos=args.photos,
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
        card = train(options, None if args.start_from and not args.network else config)
    except (DataError, StartError) as exc:
        print(f"triage train: {exc}", file=sys.stderr)
        return 2
    if card["warnings"] and not args.allow_weak:
        print(
            f"triage train: the model in {args.out} is too weak to use ({len(card['warnings'])} warnings above); "
            "train on more photos or for more epochs, or pass --allow-weak to accept it",
            file=sys.stderr,
        )
        return WEAK_MODEL
    return 0


def _report(args: argparse.Namespace) -> int:
    from model.card import CARD_NAME, CHECKPOINT_NAME
    from model.report import write_report

    if not (args.model / CARD_NAME).is_file() or not (args.model / CHECKPOINT_NAME).is_file():
        print(
            f"triage report: {args.model} holds no trained model ({CARD_NAME} and {CHECKPOINT_NAME})", file=sys.stderr
        )
        return 2
    print(f"wrote {write_report(args.model)}")
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
    from model.synth import PhotoSetError, resolve_photos, write_imagefolder

    try:
        photos = resolve_photos(args.photos)
        counts = write_imagefolder(args.out, args.n, seed=args.seed, split=args.split, photos=photos)
    except PhotoSetError as exc:
        print(f"triage synth: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {sum(counts.values())} photos to {args.out}: {counts}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from service.inference.engine import ModelLoadError
    from service.settings import shipped_model_path
    from triage_cli.predict_files import predict_files

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
    from service.inference.engine import ModelLoadError
    from service.settings import shipped_model_path
    from triage_cli.explain_file import explain_file

    if args.out.exists() and not args.out.is_dir():
        print(f"triage explain: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        return explain_file(args.file, args.out, model=args.model or shipped_model_path())
    except ModelLoadError as exc:
        print(f"triage explain: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from model.card import RETRAINED_NAME
    from service.settings import Settings

    parser = argparse.ArgumentParser(prog="triage", description="Route customer-support photos.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, formatter_class=DefaultsShown)

    p = command("train", "train the network (synthetic photos, or --data DIR)")
    p.add_argument(
        "--data",
        type=Path,
        help="ImageFolder tree DIR/screen_damage/*, DIR/general_returns/* (default: generated photos)",
    )
    p.add_argument(
        "--epochs",
        type=_positive,
        default=None,
        help="at most this many epochs (default: 14 from scratch, 3 from pretrained weights)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS, help="folder for the checkpoint and model card")
    p.add_argument("--overwrite", action="store_true", help="replace the model --out already holds")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated photos, the split and the weights")
    p.add_argument(
        "--n-train",
        type=_positive,
        default=None,
        help="generated training photos (default: 24000 from scratch, 6000 from pretrained weights; not with --data)",
    )
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
        help="fine-tune the model in DIR (e.g. artifacts) instead of starting afresh; keeps its network (default: "
        "start afresh)",
    )
    p.add_argument("--name", default=RETRAINED_NAME, help="the model's name in its card, /v1/model and every answer")
    p.add_argument(
        "--version",
        default=None,
        help="the model's version in its card, /v1/model and every answer (default: the UTC time training "
        "started, e.g. 20261207T221112Z)",
    )
    p.add_argument(
        "--allow-weak",
        action="store_true",
        help=f"exit 0 even when the model card lists warnings (accuracy near chance, temperature at its bound, no "
        f"reachable review threshold, almost nothing routed automatically); without it such a model exits "
        f"{WEAK_MODEL}",
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
    p.add_argument("--photos", type=Path, help=PHOTOS_HELP)
    p.set_defaults(handler=_train)

    p = command("report", "write report.html beside a trained model: curves, errors, calibration, hard photos")
    p.add_argument("--model", type=Path, default=DEFAULT_ARTIFACTS, help="the trained model's folder")
    p.set_defaults(handler=_report)

    p = command("export", "write and check the ONNX model, update the model card")
    p.add_argument("--checkpoint", type=Path, help="the checkpoint to export (default: triage_checkpoint.npz in --out)")
    p.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS, help="folder for the ONNX file and model card")
    p.set_defaults(handler=_export)

    p = command("parity", "compare PyTorch, ONNX Runtime, NumPy and onnx.reference layer by layer")
    p.set_defaults(handler=None)  # main() hands its arguments to export.parity, whose own parser describes them

    p = command("synth", "write generated ticket photos as an ImageFolder tree")
    p.add_argument("--out", type=Path, required=True, help="folder to write the class folders and manifest into")
    p.add_argument("--n", type=_positive, default=100, help="how many photos, half of each class")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the first photo's generator seed; the photos use seeds SEED to SEED + N - 1",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test", "shifted", "real"),
        help="which split's factor values to draw (shifted: also values training never sees; real: scenes on the "
        "real photos held out of training)",
    )
    p.add_argument("--photos", type=Path, help=PHOTOS_HELP)
    p.set_defaults(handler=_synth)

    p = command("predict", "route local photos (in-process, or through a service with --url)")
    p.add_argument("files", nargs="+", type=Path, help="photo files, or folders standing for the photos below them")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--url", help="route through a running service, e.g. http://127.0.0.1:8000 (default: in-process)")
    p.add_argument("--api-key", help="API key for --url (default: $TRIAGE_API_KEY)")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped artifacts/triage.onnx)")
    p.set_defaults(handler=_predict)

    p = command("serve", "start the HTTP service with the shipped model")
    fields = Settings.model_fields
    p.add_argument("--host", help=f"address to listen on (default: $TRIAGE_HOST, else {fields['host'].default})")
    p.add_argument("--port", type=int, help=f"port to listen on (default: $TRIAGE_PORT, else {fields['port'].default})")
    p.set_defaults(handler=_serve)

    p = command("explain", "write the explanation JSON and overlay PNGs for one photo")
    p.add_argument("file", type=Path, help="the photo")
    p.add_argument("--out", type=Path, default=Path("explanation"), help="folder for the JSON and PNG files")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped artifacts/triage.onnx)")
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
