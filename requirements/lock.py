"""Write the two locks from the installed venv (`make lock`; run with the venv's python).

    requirements/constraints.txt      what the platform needs at run time: torch plus the
                                      dependency closure of requirements/main.in
    requirements/dev-constraints.txt  what only the tests and lint need: the closure of
                                      requirements/dev.in minus what the runtime lock holds

Versions are the installed ones (exactly what scripts/setup.sh resolved together); a
package's dependencies are read from its installed metadata, with environment markers and
requested extras evaluated, so nothing is re-resolved and no index is asked. The packages of
requirements/nodeps.txt are installed without their dependencies and are in neither lock.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
# setup.sh installs torch first, on its own (the local CPU wheel), so main.in does not name it.
RUNTIME_EXTRA = ("torch",)
# Never locked, as `pip freeze` leaves them out: the venv's own installers.
INSTALLERS = {"pip", "setuptools", "wheel", "distribute"}


def read_in(path: Path) -> list[Requirement]:
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs


def installed() -> dict[str, metadata.Distribution]:
    dists = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(canonicalize_name(name), dist)
    return dists


def closure(roots: list[Requirement], dists: dict[str, metadata.Distribution]) -> set[str]:
    """Canonical names of every installed distribution the roots need (extras included)."""
    seen: set[tuple[str, str]] = set()  # (name, extra) pairs already expanded
    names: set[str] = set()
    todo = [(canonicalize_name(r.name), extra) for r in roots for extra in ("", *r.extras)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        dist = dists.get(name)
        if dist is None:
            sys.exit(f"lock: {name} is required but not installed: run `make setup` first")
        names.add(name)
        for text in dist.requires or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            env = {**default_environment(), "extra": extra}
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            todo += [(canonicalize_name(req.name), e) for e in ("", *req.extras)]
    return names


def write(path: Path, header: list[str], names: set[str],
          dists: dict[str, metadata.Distribution]) -> None:
    lines = sorted((f"{dists[n].metadata['Name']}=={dists[n].version}" for n in names),
                   key=str.lower)  # pip freeze's order
    path.write_text("".join(f"# {h}\n" for h in header) + "".join(f"{x}\n" for x in lines))
    print(f"lock: {path.relative_to(HERE.parent)} ({len(lines)} packages)")


def main() -> None:
    dists = installed()
    nodeps = {canonicalize_name(r.name) for r in read_in(HERE / "nodeps.txt")}
    runtime = closure(read_in(HERE / "main.in") + [Requirement(n) for n in RUNTIME_EXTRA],
                      dists) - nodeps - INSTALLERS
    dev = closure(read_in(HERE / "dev.in"), dists) - runtime - nodeps - INSTALLERS
    write(HERE / "constraints.txt",
          ["Lock: the exact versions resolved together by scripts/setup.sh (Python 3.11, CPU "
           "torch):", "torch and the dependency closure of requirements/main.in. Test and lint "
           "tools: dev-constraints.txt.", "Regenerate: make lock"], runtime, dists)
    write(HERE / "dev-constraints.txt",
          ["Dev lock: the test and lint tools of requirements/dev.in and what only they need,",
           "resolved together with constraints.txt (install with both: -c constraints.txt "
           "-c dev-constraints.txt).", "Regenerate: make lock"], dev, dists)


if __name__ == "__main__":
    main()
