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
  "$venv/bin/ruff" check mcsdns sandbox tests fuzz
  "$venv/bin/mypy"
  "$venv/bin/lint-imports"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider
}

# Run every fuzzer of fuzz/ for FUZZ_SECONDS (15) with the venv in $1, from the corpus in fuzz/corpus/; a
# failing input fails the run, its traceback and bytes printed (fuzz/README.md makes it a test). Skipped where
# atheris has no wheel (it is only locked for Linux x86_64).
fuzz_briefly() {
  local venv=$1 seconds=${FUZZ_SECONDS:-15} target work dict
  if ! "$venv/bin/python" -c "import atheris" 2>/dev/null; then
    echo "fuzz: skipped, atheris is not installed for this platform"
    return 0
  fi
  for target in packet manifests cloudmap; do
    work=$(mktemp -d)
    dict=()
    [ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")
    # New inputs go to the first directory, a temporary one: the checked-in corpus is only read.
    if ! "$venv/bin/python" "fuzz/$target.py" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$work/" "${dict[@]}" "$work" "fuzz/corpus/$target" >"$work/log" 2>&1; then
      grep -v -E "^(#[0-9]+ +(NEW|REDUCE|pulse)|INFO: Instrumenting)" "$work/log" | tail -60
      echo "fuzz: $target failed; its input is in $work (fuzz/README.md, \"When a fuzzer fails\")"
      return 1
    fi
    echo "fuzz: $target: $(grep -o -E '^Done [0-9]+ runs in [0-9]+ second\(s\)' "$work/log")," \
      "$(grep -o -E 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$work/log" | tail -1)"
    rm -rf "$work"
  done
}
