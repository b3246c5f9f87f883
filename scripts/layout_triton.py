"""Lay out the tritonserver shipped in the nvidia-pytriton wheel as a Triton install folder.

    <dest>/bin/tritonserver                 -> the wheel's binary (symlink)
    <dest>/backends/python/                 libtriton_python.so, triton_python_backend_utils.py,
                                            triton_python_backend_stub (this Python's version)
    <dest>/lib                              -> nvidia_pytriton.libs (LD_LIBRARY_PATH)

Only the binary is used; pytriton's Python API is not. Run by scripts/setup.sh.
"""

import shutil
import sys
import sysconfig
from pathlib import Path


def main(dest: Path) -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    wheel = site / "pytriton" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": wheel / "backends/python/libtriton_python.so",
        "triton_python_backend_utils.py": wheel / "backends/python/triton_python_backend_utils.py",
        "triton_python_backend_stub": wheel / f"python_backend_stubs/{version}/triton_python_backend_stub",
    }
    for src in [wheel / "bin/tritonserver", *sources.values()]:
        if not src.exists():
            sys.exit(f"layout_triton: {src} is missing; is nvidia-pytriton==0.7.0 installed?")

    backend = dest / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        shutil.copy2(src, backend / name)
    links = {dest / "bin": wheel / "bin", dest / "lib": site / "nvidia_pytriton.libs"}
    for link, target in links.items():
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve(), target_is_directory=True)
    print(f"tritonserver laid out in {dest}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
