#!/usr/bin/env bash
# Shows that the process tests execute ferry's security guards: runs the given
# tests (default: the guard tests of stages/) with ferry built with coverage
# (FERRY_COVERDIR, internal/ferrybuild), then prints, for every guard below,
# how often the line inside it ran. Exits 1 if one never ran.
#
#   scripts/guardcover.sh [go test -run regexp]
#
# A guard is "file|text of a line inside it" (the line the guard's branch
# runs: its error or warning). See docs/bad-input.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${1:-'TestDotenvEnvLimit|TestScriptExitCodeStill|TestDotenvReportPathGuards|TestDotenvFerryKeys|TestDotenvReportOfAnother|TestGitlabEnvGuards'}
guards=(
  'stages/feature_dotenv.go|is outside the project directory'
  "stages/feature_dotenv.go|FERRY_* variables are ferry's own"
  'stages/feature_dotenv.go|if err := refuseReport(j, dep, err); err != nil {'
  'stages/run.go|is a job variable and a secret'
  'stages/run.go|value has characters not safe in GITLAB_ENV'
  'stages/run.go|path := st.BinDir() + ":" + p'
  'stages/run.go|PATH job variable has characters not safe'
  'pkg/dotenv/dotenv.go|return fail("%v", err)'
)
GO=${GO:-go}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-guardcover.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/cov"
cd "$root"
FERRY_COVERDIR="$tmp/cov" "$GO" test -count=1 ./stages/ -run "$run"
"$GO" tool covdata textfmt -i="$tmp/cov" -o "$tmp/profile.txt"
module=$("$GO" list -m)
missing=0
for g in "${guards[@]}"; do
  file=${g%%|*}
  text=${g#*|}
  line=$(grep -nF -- "$text" "$file" | head -1 | cut -d: -f1 || true)
  if [ -z "$line" ]; then
    echo "NOT FOUND  $file: $text"
    missing=1
    continue
  fi
  # profile lines: <module>/<file>:<l0>.<c0>,<l1>.<c1> <statements> <count>
  count=$(awk -v f="$module/$file" -v l="$line" '
    { split($1, a, ":"); if (a[1] != f) next
      split(a[2], r, ","); split(r[1], s, "."); split(r[2], e, ".")
      if (s[1] <= l && l <= e[1] && $3 > max) max = $3 }
    END { print max + 0 }' "$tmp/profile.txt")
  if [ "$count" -gt 0 ]; then
    printf 'ran %5d  %s:%s  %s\n' "$count" "$file" "$line" "$text"
  else
    printf 'NEVER RAN  %s:%s  %s\n' "$file" "$line" "$text"
    missing=1
  fi
done
exit $missing
