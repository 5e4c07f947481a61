#!/usr/bin/env bash
# Reproduce the real, public corpus that scripts/measure_answers.py and
# tests/data/answers/real_questions.json measure answers on: documents nobody on the
# team wrote.
#
#   scripts/fetch_answer_corpus.sh OUT_DIR [--suffixless]
#
# OUT_DIR (new or empty) receives
#   licenses/<NAME>.txt    the 14 regular files of /usr/share/common-licenses (the
#                          GFDL, GPL and LGPL symlinks are left out: they are copies)
#   nut/user-manual.pdf    Network UPS Tools user manual (PDF, 135 pages)  } from the
#   nut/FAQ.html           Network UPS Tools FAQ (one HTML page)           } nut-doc .deb
#   apcupsd/manual.html    apcupsd user manual (one HTML page)  from the apcupsd-doc .deb
#
# The licences get a .txt suffix because Enclave (main at fe429c9) skips files without a
# known suffix ("unsupported file type (no suffix)", and "Apache-2.0" is read as
# suffix ".0"). --suffixless copies them under their own names instead, for measuring
# an Enclave that indexes plain-text files by content; measure_answers.py matches a
# question's expected file with or without the .txt.
#
# The .deb files are fetched with `apt-get download` (Debian 12 "bookworm" versions
# pinned below) into a cache folder (ANSWER_CORPUS_CACHE, default
# ~/.cache/enclave-answer-corpus, or reuse .debs already there) and checked by sha256;
# the licence texts are checked by sha256 too (Debian base-files 12.4+deb12u11). A
# mismatch stops the script: questions were written against these exact bytes.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR [--suffixless]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1
shift
suffix=.txt
for arg in "$@"; do
  case $arg in
    --suffixless) suffix= ;;
    *) usage ;;
  esac
done

if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "error: $out is not empty; give a new or empty directory" >&2
  exit 1
fi

cache=${ANSWER_CORPUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-answer-corpus}
mkdir -p "$cache" "$out"

# package  version  sha256 of the .deb
debs=(
  "nut-doc 2.8.0-7 d9b7ad56a6635a973a3b92cdb979755d5595264bcd0f5399886351cc9b994542"
  "apcupsd-doc 3.14.14-3.1 04aa73e6d2e3b732109fe58de3fd4beb3dd735330036028622f958edcc365988"
)

# sha256 of each licence text as shipped by base-files 12.4+deb12u11
licenses=(
  "Apache-2.0 cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
  "Artistic b7fd9b73ea99602016a326e0b62e6646060d18febdd065ceca8bb482208c3d88"
  "BSD 5d588eb3b157d52112afea935c88a7ff9efddc1e2d95a42c25d3b96ad9055008"
  "CC0-1.0 a2010f343487d3f7618affe54f789f5487602331c0a8d03f49e9a7c547cf0499"
  "GFDL-1.2 d8e94ae5fdb5433fcae2961aeb1a8cf17174d6f4a0465d24bf37dd8a038bd439"
  "GFDL-1.3 110535522396708cea37c72a802c5e7e81391139f5f7985631c93ef242b206a4"
  "GPL-1 d77d235e41d54594865151f4751e835c5a82322b0e87ace266567c3391a4b912"
  "GPL-2 8177f97513213526df2cf6184d8ff986c675afb514d4e68a404010521b880643"
  "GPL-3 3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"
  "LGPL-2 681e386e44a19d7d0674b4320272c90e66b6610b741e7e6305f8219c42e85366"
  "LGPL-2.1 dc626520dcd53a22f727af3ee42c770e56c97a64fe3adb063799d8ab032fe551"
  "LGPL-3 e3a994d82e644b03a792a930f574002658412f62407f5fee083f2555c5f23118"
  "MPL-1.1 f849fc26a7a99981611a3a370e83078deb617d12a45776d6c4cada4d338be469"
  "MPL-2.0 fab3dd6bdab226f1c08630b1dd917e11fcb4ec5e1e020e2c16f83a0a13863e85"
)

check() {  # check FILE SHA256
  local got
  got=$(sha256sum "$1" | cut -c1-64)
  if [ "$got" != "$2" ]; then
    echo "error: $1 has sha256 $got, expected $2" >&2
    exit 1
  fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for entry in "${debs[@]}"; do
  read -r pkg version sha <<<"$entry"
  deb="$cache/${pkg}_${version}_all.deb"
  if [ ! -f "$deb" ]; then
    echo "downloading $pkg=$version" >&2
    (cd "$cache" && apt-get download "$pkg=$version" >&2)
  fi
  check "$deb" "$sha"
  dpkg-deb -x "$deb" "$work/$pkg"
  echo "$sha  ${pkg}_${version}_all.deb"
done

mkdir -p "$out/licenses" "$out/nut" "$out/apcupsd"
for entry in "${licenses[@]}"; do
  read -r name sha <<<"$entry"
  src=/usr/share/common-licenses/$name
  [ -f "$src" ] || { echo "error: $src is missing" >&2; exit 1; }
  check "$src" "$sha"
  cp "$src" "$out/licenses/$name$suffix"
  echo "$sha  licenses/$name$suffix"
done

nut=$work/nut-doc/usr/share/doc/nut-doc
apc=$work/apcupsd-doc/usr/share/doc/apcupsd/manual
cp "$nut/pdf/user-manual.pdf" "$out/nut/user-manual.pdf"
cp "$nut/html/FAQ.html" "$out/nut/FAQ.html"
cp "$apc/manual.html" "$out/apcupsd/manual.html"
(cd "$out" && sha256sum nut/user-manual.pdf nut/FAQ.html apcupsd/manual.html)
echo "corpus written to $out ($(find "$out" -type f | wc -l) files)" >&2
