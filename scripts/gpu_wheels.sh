#!/usr/bin/env bash
# Wheels of what a bare GPU machine (Python 3.12, torch, lightning, numpy, scipy, opencv preinstalled) lacks to
# run scripts/gpu_check.sh, at the versions this checkout's .venv tested, into .whl/; and coco128 into .gpu/.
# Both folders are git-ignored (.git/info/exclude); together ~31 MiB. PYVER=3.12 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
PYVER=${PYVER:-3.12}
pkgs=(hydra-core omegaconf albumentations albucore pydantic pydantic-core annotated-types typing-inspection
      simsimd stringzilla pycocotools)
pins=()
for p in "${pkgs[@]}"; do pins+=("$p==$("$PIP" show "$p" | sed -n 's/^Version: //p')"); done
mkdir -p .whl .gpu/datasets
plat=()
for n in 1 2014; do plat+=(--platform "manylinux${n}_x86_64"); done
for n in 17 24 27 28 31 34; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
"$PIP" download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${plat[@]}" -d .whl "${pins[@]}"
# antlr4-python3-runtime 4.9.3 (omegaconf's parser) is published as a source archive only: build its pure wheel
"$PIP" wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
rm -rf .gpu/datasets/coco128
cp -r "${BAGOF_DATASETS:-../shared/datasets}/coco128" .gpu/datasets/
chmod -R u+w .gpu/datasets
du -sh .whl .gpu
