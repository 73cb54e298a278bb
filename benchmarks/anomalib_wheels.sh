#!/usr/bin/env bash
# Wheels that let benchmarks/anomalib_peers.py run on the offline GPU machine (Python 3.12, x86-64,
# torch 2.11 / lightning 2.6 / torchmetrics 1.9 / numpy 2.5 preinstalled): anomalib 2.7.0 and every
# dependency of it that the machine lacks, saved into .whl/ (git-ignored) at the repository root.
#
#   bash benchmarks/anomalib_wheels.sh          # download (skips wheels already there), verify, list
#
# There, with .whl carried:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# Left out on purpose: imagecodecs (26 MB; anomalib never imports it, only tifffile tries it as an
# optional codec backend, and we hand anomalib arrays, not TIFF files). omegaconf 2.4 no longer needs
# antlr4-python3-runtime. FrEIA 0.2 exists only as an sdist: it is built here into a pure-python
# py3-none-any wheel.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${WHL_DIR:-$REPO/.whl}"
PY="${PYTHON:-python3}"

# Versions are the ones benchmarks/.venv resolved (make bench-venv) and the smoke run passed with.
WHEELS=(
  anomalib==2.7.0
  freia==0.2
  kornia==0.9.0
  kornia-rs==0.2.0
  jsonargparse==4.46.0
  docstring-parser==0.18.0   # jsonargparse[signatures]
  typeshed-client==2.14.0    # jsonargparse[signatures]
  omegaconf==2.4.0
  rich-argparse==1.8.0
  platformdirs==4.14.7
)
SDIST_ONLY=(freia)  # no wheel on PyPI: build one (pure python)
SKIPPED="imagecodecs"  # required by anomalib's metadata, never imported on our path (see the top)

# What the GPU machine already has (normalised names); requirements on these need no wheel.
GPU_HAS="absl-py accelerate aiohttp attrs certifi click contourpy cycler einops filelock fonttools fsspec
h5py huggingface-hub idna imageio jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
markdown-it-py markupsafe matplotlib networkx numpy opencv-python-headless packaging pandas pillow protobuf
psutil pygments pyparsing python-dateutil pytorch-lightning pyyaml requests rich safetensors scikit-image
scikit-learn scipy six sympy tabulate tifffile timm torch torchmetrics torchvision tqdm typer
typing-extensions urllib3"
# Versions known there, checked against the wheels' requirement specifiers.
GPU_VERSIONS="lightning=2.6.6 pytorch-lightning=2.6.6 torchmetrics=1.9.0 torch=2.11.0 numpy=2.5.2"

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p "$DEST"

norm() { echo "$1" | tr '[:upper:]_.' '[:lower:]--'; }

for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"; key="$(norm "$name")"
  have=""
  for f in "$DEST"/*.whl; do
    [ -e "$f" ] || continue
    base="$(basename "$f")"; fname="$(norm "${base%%-*}")"; fver="$(echo "$base" | cut -d- -f2)"
    [ "$fname" = "$key" ] || continue
    if [ "$fver" = "$version" ]; then have=1
    else echo "removing $base: another version of $name (two versions stop --no-deps installs)"; rm -f "$f"; fi
  done
  [ -n "$have" ] && continue
  # (the grep drops pip's notes about this machine's local indexes lacking the package)
  if [[ " ${SDIST_ONLY[*]} " == *" $key "* ]]; then
    "$PY" -m pip wheel -q --no-deps -w "$DEST" "$spec" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  else
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d "$DEST" "$spec" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  fi
done

# Completeness: every requirement (without an extra, or of an extra another wheel asks for, e.g.
# jsonargparse[signatures]) evaluated for CPython 3.12 on linux x86-64 must be on the GPU machine or
# among the wheels, and a wheel or known GPU version must satisfy its version specifier.
GPU_HAS="$GPU_HAS" GPU_VERSIONS="$GPU_VERSIONS" SKIPPED="$SKIPPED" "$PY" - "$DEST" <<'EOF'
import os, re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

dest = Path(sys.argv[1])
gpu = {canonicalize_name(n) for n in os.environ["GPU_HAS"].split()}
gpu_versions = dict(item.split("=") for item in os.environ["GPU_VERSIONS"].split())
skipped = {canonicalize_name(n) for n in os.environ["SKIPPED"].split()}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython"}
wheels, requires = {}, {}
for path in sorted(dest.glob("*.whl")):
    name, version = path.name.split("-")[:2]
    key = canonicalize_name(name)
    if key in wheels:
        sys.exit(f"two wheels of {key} in {dest}: pip install --no-deps would fail")
    wheels[key] = Version(version)
    with zipfile.ZipFile(path) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    requires[key] = [Requirement(line.split(":", 1)[1].strip())
                     for line in text.splitlines() if line.startswith("Requires-Dist:")]

extras = {key: {""} for key in wheels}  # "" = the package's plain requirements
problems, todo = [], list(wheels)
while todo:
    key = todo.pop()
    for req in requires.get(key, []):
        if not any(req.marker is None or req.marker.evaluate({**env, "extra": extra}) for extra in extras[key]):
            continue
        dep = canonicalize_name(req.name)
        if dep in wheels:
            if req.specifier and wheels[dep] not in req.specifier:
                problems.append(f"{key} needs {req}, the wheel is {wheels[dep]}")
            new = set(req.extras) - extras[dep]
            if new:
                extras[dep] |= new
                todo.append(dep)
        elif dep in gpu:
            known = gpu_versions.get(dep)
            if known and req.specifier and Version(known) not in req.specifier:
                problems.append(f"{key} needs {req}, the GPU machine has {dep} {known}")
        elif dep in skipped:
            print(f"skipped on purpose: {key} needs {req}")
        else:
            problems.append(f"{key} needs {req}: neither on the GPU machine nor in {dest}")
for problem in problems:
    print("MISSING/CONFLICT:", problem)
total = sum(p.stat().st_size for p in dest.glob("*.whl"))
print(f"{len(wheels)} wheels in {dest}, {total / 2**20:.1f} MiB:")
for path in sorted(dest.glob("*.whl")):
    print(f"  {path.stat().st_size / 2**20:6.2f} MiB  {path.name}")
if total > 30 * 2**20:
    problems.append("over 30 MiB")
    print("too large: over 30 MiB")
print("complete: every requirement is on the GPU machine or in the wheels" if not problems else
      f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
EOF
