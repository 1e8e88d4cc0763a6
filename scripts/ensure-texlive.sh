#!/usr/bin/env bash
# Make sure latexmk + the TeX Live packages the paper needs exist: install them with apt when we are root on
# Debian/Ubuntu, otherwise say exactly what to install (the PDF step then reports it and the rest still runs).
set -euo pipefail
PACKAGES="latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended lmodern"
command -v latexmk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "latexmk not found: installing TeX Live with apt-get (${PACKAGES})"
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${PACKAGES} >/dev/null
else
  echo "latexmk not found and cannot install it here (needs root + apt-get). Install: apt-get install ${PACKAGES}" >&2
fi
