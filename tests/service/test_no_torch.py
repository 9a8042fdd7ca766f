"""The serving path never imports torch: import it, build the server and route a photo with torch blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The start of a script in which importing torch fails (other tests run their own script after it).
BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"the serving path imported {name}")
            return None

    sys.meta_path.insert(0, NoTorch())
    """
)

SCRIPT = BLOCK_TORCH + textwrap.dedent(
    """
    import json, tempfile, time
    from pathlib import Path

    import triage_cli.client, triage_cli.predict_files, service.inference.route_api, service.server
    import service.runtime.supervisor
    from service.metrics import use_metrics_dir
    from triage_cli.predict_files import predict_files
    from service.inference.route_api import RouteAPI
    from service.server import build_server, preflight
    from service.settings import Settings
    from service.http.uploads import TicketUpload, UploadedPhoto

    model, photo = Path(sys.argv[1]), Path(sys.argv[2])
    use_metrics_dir(Path(tempfile.mkdtemp()))
    assert predict_files([photo], as_json=True, url=None, model=model) == 0
    settings = Settings(model_path=model)
    build_server(settings, *preflight(settings))
    api = RouteAPI(settings)
    api.setup("cpu")
    routed = api.predict(api.decode_request(TicketUpload("r", time.time(), (UploadedPhoto("p", photo.read_bytes()),))))
    print(json.dumps({"status": api.encode_response(routed).status_code, "torch": "torch" in sys.modules}))
    """
)


def test_serving_path_runs_without_torch(random_model_dir: Path, photos: dict[str, bytes], tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photos["exif_rotated_jpeg"])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(random_model_dir / "triage.onnx"), str(photo)],
        cwd=ROOT,
        capture_output=True,
        timeout=600,  # seconds on a quiet machine, minutes on a loaded one; a hang still fails
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    predicted, summary = (json.loads(line) for line in done.stdout.decode().strip().splitlines()[-2:])
    assert predicted["file"] == str(photo) and predicted["route"]
    assert summary == {"status": 200, "torch": False}
