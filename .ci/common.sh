# Shared by .ci/run (the locked versions) and .ci/latest (the newest versions the ranges allow).

# Debian packages the suite needs: dig for the DNS tests.
install_debs() {
  local debs=()
  command -v dig >/dev/null 2>&1 || debs+=(bind9-dnsutils)
  if ((${#debs[@]})); then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${debs[@]}"
  fi
}

# Lint, type-check, check the import contracts and run every test (pytest) with the venv in $1.
lint_and_pytest() {
  local venv=$1
  "$venv/bin/pip" check
  "$venv/bin/ruff" check mcsdns sandbox tests
  "$venv/bin/mypy"
  "$venv/bin/lint-imports"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider
}
