#!/usr/bin/env bash
# Build ovsvnet's Debian package from this tree with Debian's own tooling (dpkg-buildpackage,
# debhelper, dh-python/pybuild's pyproject plugin), then check it with lintian.
#
#   bash ci/build-deb.sh [OUTDIR]      # default OUTDIR: build/deb
#
# Writes OUTDIR/ovsvnet_<version>_all.deb (with its .buildinfo and .changes). Needs the
# build dependencies of debian/control (dpkg-checkbuilddeps names what is missing):
#   apt-get install debhelper dh-python pybuild-plugin-pyproject python3-all \
#     python3-setuptools python3-click lintian
# The build runs in a copy of the tree (tracked and untracked, not ignored, files), so the
# checkout gets no .pybuild/ or debian/ovsvnet/ and a dirty tree builds what it holds; PATH
# is reset to the system's (an interpreter earlier on PATH, e.g. an activated virtualenv,
# would build against the wrong Python). OVSVNET_LINTIAN=0 skips lintian.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$here/build/deb}" && cd "${1:-$here/build/deb}" && pwd)

pkg_version=$(sed -n '1s/^ovsvnet (\([^)]*\)).*/\1/p' "$here/debian/changelog")
py_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$here/ovsvnet/__init__.py")
toml_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/pyproject.toml")
if [ "$pkg_version" != "$py_version" ] || [ "$pkg_version" != "$toml_version" ]; then
  echo "build-deb: version mismatch: debian/changelog $pkg_version, ovsvnet/__init__.py" \
       "$py_version, pyproject.toml $toml_version (add a changelog entry: dch -v $py_version)" >&2
  exit 2
fi

work=$(mktemp -d /tmp/ovsvnet-deb.XXXXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/ovsvnet-$pkg_version
mkdir "$src"
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$here" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do
        if [ -e "$here/$f" ] || [ -L "$here/$f" ]; then printf '%s\0' "$f"; fi
      done \
    | tar -C "$here" --null -T - -cf - | tar -C "$src" -xf -
else
  tar -C "$here" --exclude=./.git --exclude=./.venv --exclude=./build -cf - . | tar -C "$src" -xf -
fi

start=$(date +%s.%N)
(cd "$src" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" LANG=C.UTF-8 \
   SOURCE_DATE_EPOCH="$(date -d "$(dpkg-parsechangelog -l debian/changelog -S Date)" +%s)" \
   dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || {
  tail -n 40 "$work/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed (log above)" >&2
  exit 1
}
deb=ovsvnet_${pkg_version}_all.deb
changes=ovsvnet_${pkg_version}_$(dpkg --print-architecture).changes
cp "$work/$deb" "$work"/ovsvnet_"${pkg_version}"_*.buildinfo "$work/$changes" "$out/"
printf "built %s/%s in %s s\n" "$out" "$deb" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"

if [ "${OVSVNET_LINTIAN:-1}" != 0 ]; then
  # Errors fail the build; warnings and info are printed (the one accepted warning is
  # explained in debian/ovsvnet.lintian-overrides).
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" LANG=C.UTF-8 \
    lintian --allow-root --fail-on error --info "$out/$changes"
  echo "lintian: no errors"
fi
