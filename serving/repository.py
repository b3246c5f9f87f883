"""The Triton model repository of a registered model version.

    build_repository(settings, bundle_or_version, dest)   write it to a local folder
    build_and_upload(settings, name, alias=... | version=...) -> "model-repository/<version>/"
    fetch_repository(settings, version, dest)             copy it from the store, for this pool

`python -m serving.repository fetch --version N --dest DIR` is the serving pod's init step:
the tritonserver of the serving image reads no object store, and each pod's instance groups
come from its own settings (the chart's values: MC_SERVE__GPU_INSTANCES …), not from whoever
built the repository.

Layout (self-contained: weights are copied into the version folders, so a cluster serves
it straight from the object store):

    motion_control/config.pbtxt     1/model.py          BLS entry point (one mp4)
    motion_control_stream/…         1/model.py          the same source, decoupled (streaming)
    motion_extractor/config.pbtxt   1/model.py          MediaPipe (models in the wheel)
    identity_encoder/config.pbtxt   1/model.py          dlib (models in the package)
    prompt_enhancer/config.pbtxt    1/model.py  1/smollm2.gguf
    student_dit/config.pbtxt        1/model.py  1/dit.safetensors 1/vae.safetensors 1/meta.json
                                    1/text_encoder/ 1/served.json
    serving.json                    what was built from what

The model.py files import `models`, `flows` and `serving` (serving/backend.py): the Python
backend's stub ignores PYTHONPATH and puts its working directory first on sys.path, so
tritonserver must run in the code's root (serving/server.py does; in a container, make it
the WORKDIR) or with this project installed in the server's Python.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from flows.registry import ModelBundle, load_bundle
from flows.settings import STUDENT_MODEL, ServeSettings, Settings
from flows.store import open_store
from models.assets import smollm2_gguf
from serving.spec import MODELS, ModelSpec, TensorSpec
from serving.weights import write_served_weights

SOURCES = Path(__file__).resolve().parent / "triton_models"


def repository_prefix(version: int) -> str:
    return f"model-repository/{version}/"


def _tensor(spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.dims)
    optional = "\n    optional: true" if spec.optional else ""
    return (f"  {{\n    name: \"{spec.name}\"\n    data_type: TYPE_{spec.dtype}\n"
            f"    dims: [ {dims} ]{optional}\n  }}")


def model_config(spec: ModelSpec, serve: ServeSettings, parameters: dict[str, str]) -> str:
    """config.pbtxt of one Python-backend model."""
    groups = [f"  {{ count: {getattr(serve, spec.instances)} kind: KIND_CPU }}"]
    if spec.gpu and serve.gpu_instances:
        groups.append(f"  {{ count: {serve.gpu_instances} kind: KIND_GPU }}")
    params = "".join(f"parameters {{\n  key: \"{k}\"\n  value: {{ string_value: \"{v}\" }}\n}}\n"
                     for k, v in sorted(parameters.items()))
    inputs, outputs, groups = (",\n".join(items) for items in (
        [_tensor(t) for t in spec.inputs], [_tensor(t) for t in spec.outputs], groups))
    policy = "model_transaction_policy {\n  decoupled: true\n}\n" if spec.decoupled else ""
    return (f"name: \"{spec.name}\"\nbackend: \"python\"\nmax_batch_size: 0\n"
            f"{policy}input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"instance_group [\n{groups}\n]\n{params}")


def write_configs(root: Path, serve: ServeSettings, parameters: dict[str, str]) -> None:
    """Every model's config.pbtxt, with the instance groups of `serve`."""
    for spec in MODELS.values():
        (root / spec.name / "config.pbtxt").write_text(model_config(spec, serve, parameters))


def build_repository(settings: Settings, bundle_or_version: ModelBundle | int, dest: Path,
                     name: str = STUDENT_MODEL) -> Path:
    """Write the repository of a bundle (or of version N of `name`) under `dest`."""
    bundle = bundle_or_version if isinstance(bundle_or_version, ModelBundle) else \
        load_bundle(settings, name, version=bundle_or_version)
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    parameters = {"size": str(bundle.resolution), "frames": str(bundle.frames)}
    for spec in MODELS.values():
        version_dir = dest / spec.name / "1"
        version_dir.mkdir(parents=True)
        shutil.copy2(SOURCES / f"{spec.source}.py", version_dir / "model.py")
    write_configs(dest, settings.serve, parameters)
    shutil.copy2(smollm2_gguf(), dest / "prompt_enhancer" / "1" / "smollm2.gguf")
    write_served_weights(bundle, dest / "student_dit" / "1")
    (dest / "serving.json").write_text(json.dumps({
        "model": bundle.name, "version": bundle.version, "kind": bundle.kind,
        "resolution": bundle.resolution, "frames": bundle.frames, "steps": bundle.steps,
        "models": sorted(MODELS)}, indent=2))
    return dest


def build_and_upload(settings: Settings, name: str = STUDENT_MODEL, alias: str | None = None,
                     version: int | None = None) -> str:
    """Build the repository of `name` at `alias` (default "champion") or `version` and upload
    it to the object store; returns its prefix `model-repository/<version>/`."""
    if alias is None and version is None:
        alias = "champion"
    bundle = load_bundle(settings, name, alias=alias, version=version)
    prefix = repository_prefix(bundle.version)
    store = open_store(settings)
    with tempfile.TemporaryDirectory(prefix="mc-repository-") as tmp:
        root = build_repository(settings, bundle, Path(tmp) / "repository")
        store.delete_prefix(prefix)  # a rebuild replaces the old files, never mixes
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            store.put_file(prefix + path.relative_to(root).as_posix(), path)
    return prefix


def download_repository(settings: Settings, prefix: str, dest: Path) -> Path:
    """A repository uploaded by `build_and_upload`, copied from the store into `dest`."""
    store = open_store(settings)
    if not store.get_prefix(prefix, dest):
        raise FileNotFoundError(f"no model repository under {store.uri(prefix)}")
    return Path(dest)


def fetch_repository(settings: Settings, version: int, dest: Path) -> Path:
    """Version `version`'s repository from the store into `dest`, its instance groups
    rewritten for this machine's settings (settings.serve)."""
    root = download_repository(settings, repository_prefix(version), dest)
    built = json.loads((root / "serving.json").read_text())
    write_configs(root, settings.serve, {"size": str(built["resolution"]),
                                         "frames": str(built["frames"])})
    return root


def main(argv: list[str] | None = None) -> None:
    import argparse

    from flows.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m serving.repository")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="copy a version's repository from the store")
    fetch.add_argument("--version", type=int, required=True)
    fetch.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = get_settings()
    root = fetch_repository(settings, args.version, args.dest)
    serve = settings.serve
    print(f"model repository {args.version} in {root}: {serve.cpu_instances} CPU and "
          f"{serve.gpu_instances} GPU instances per model")


if __name__ == "__main__":
    main()
