#!/usr/bin/env bash
# Download, here, the wheels a GPU machine without a package registry lacks, into the git-ignored .whl/ of this
# checkout (it travels with the working tree; scripts/gpu_check.sh installs from it whichever of them that machine
# lacks). Target: CPython 3.12, manylinux x86-64 (the lent H200 machine: Python 3.12, PyTorch 2.11; its package
# list is /work/.library/device/KINDS.md). Each wheel is fetched with --no-deps, so every dependency is named.
#
#   bash scripts/gpu_wheels.sh            # then, on the GPU machine: bash scripts/gpu_check.sh OUT
#
# Required: hydra-core, omegaconf and antlr4-python3-runtime 4.9.3 (the version hydra-core 1.3 pins; published only
# as a source archive, so it is built into a pure-Python wheel here). Fallbacks, installed there only if absent:
# pandas (+ python-dateutil), tabulate. Optional: the official optimizer implementations the optimizer-step
# benchmark compares against (adamp, expectigrad, torch-optimizer + pytorch-ranger); a failure to get one of those
# is reported, not fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PY=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
REQUIRED=(hydra-core==1.3.8 omegaconf==2.3.1 pandas==3.1.1 python-dateutil==2.9.0.post0 tabulate==0.10.0)
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3)
OPTIONAL=(adamp==0.3.0 expectigrad==0.0.0 torch-optimizer==0.3.0 pytorch-ranger==0.1.1)

mkdir -p "$DEST"
if ! git check-ignore -q "$DEST/x.whl" 2>/dev/null; then
  echo "gpu_wheels: $DEST/ is not git-ignored; add '/.whl/' to .gitignore" >&2
  exit 1
fi
download() {  # binary wheels for the target interpreter only
  python3 -m pip download -q --no-deps --only-binary=:all: "${PY[@]}" "${PLATFORMS[@]}" -d "$DEST" "$@"
}
for req in "${REQUIRED[@]}"; do
  download "$req"
done
for req in "${SOURCE_ONLY[@]}" "${OPTIONAL[@]}"; do
  # a pure-Python wheel when one is published, else built from the source archive (needs no compiler)
  if ! download "$req" 2>/dev/null; then
    if ! python3 -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST" "$req"; then
      case " ${OPTIONAL[*]} " in
        *" $req "*) echo "gpu_wheels: could not get optional $req (the benchmark skips its reference)" >&2 ;;
        *) exit 1 ;;
      esac
    fi
  fi
done
# one version of each: two wheels of one name stop the whole install there
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "gpu_wheels: several versions of: $dupes (delete the old ones from $DEST/)" >&2
  exit 1
fi
ls -l "$DEST"
du -sh "$DEST"
