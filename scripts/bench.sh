#!/usr/bin/env bash
# make bench: every benchmark ferry has targets for, each measured side by side
# with its baseline in the same run, printed as ratios. Takes about 5 minutes
# (the Kubernetes part needs the e2e module built: the first run adds ~5).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=$(mktemp); trap 'rm -f "$out"' EXIT

section() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

section "stage overhead: ferry run vs bash on the same trivial stage script (target <= 1.5x), and the floor of any separate executor program"
$GO test -run '^$' -bench 'BenchmarkRunStage$|BenchmarkSandboxCost|BenchmarkBashDirect|BenchmarkFerryStart|BenchmarkStageFloor|BenchmarkProcessStart|BenchmarkPrepare$|BenchmarkPreparePackaged' -count "${COUNT:-3}" -benchtime "${BENCHTIME:-300x}" ./stages | tee "$out"
# Medians of the -count runs: one noisy run on a shared machine moves a mean.
awk '/^Benchmark(RunStage|BashDirect|FerryStart|StageFloor|ProcessStart|Prepare|PreparePackaged)-/ { n=$1; sub(/-[0-9]+$/, "", n); v[n]=v[n] " " $3 }
  /^BenchmarkSandboxCost\// { s = $1; sub(/^BenchmarkSandboxCost\//, "", s); sub(/-[0-9]+$/, "", s); if (!(s in seen)) { seen[s] = 1; order[++ns] = s }
    for (i = 4; i < NF; i++) if ($(i+1) ~ /^sandbox-(cpu|wall)-ms/) v[s " " $(i+1)] = v[s " " $(i+1)] " " $i }
  function median(s,   a, k, i, j, t) { k = split(s, a, " "); for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((k + 1) / 2)] }
  END { r = median(v["BenchmarkRunStage"]); b = median(v["BenchmarkBashDirect"]); f = median(v["BenchmarkStageFloor"]); s = median(v["BenchmarkFerryStart"])
    if (r && b) printf "ferry run %.2f ms/stage, bash %.2f ms: ratio %.2fx (target 1.5x), overhead %.2f ms/stage\n", r/1e6, b/1e6, r/b, (r-b)/1e6
    if (f) printf "floor (a Go program that only starts bash) %.2f ms = %.2fx bash; ferry run = %.2fx the floor; ferry start alone %.2f ms\n", f/1e6, f/b, r/f, s/1e6
    t = median(v["BenchmarkProcessStart"]); p = median(v["BenchmarkPrepare"])
    if (t) printf "/bin/true %.2f ms = %.2fx bash; prepare through the engine %.2f ms (once per job)\n", t/1e6, t/b, p/1e6
    k = median(v["BenchmarkPreparePackaged"])
    if (k && p) printf "prepare installed from the .deb (root-owned engine, nothing unpacked or compared) %.2f ms vs single file (compares the unpacked engine) %.2f ms: %.2fx\n", k/1e6, p/1e6, p/k
    for (k = 1; k <= ns; k++) { s = order[k]; c = median(v[s " sandbox-cpu-ms/stage"]); w = median(v[s " sandbox-wall-ms/stage"])
      printf "sandbox, %s (other jobs'"'"' custom-executor* dirs in the runner'"'"'s temp root), paired runs with and without: %+.2f ms CPU, %+.2f ms wall per stage (goal < 1 ms)\n", s, c, w } }' "$out"

section "prepare with a 5 MB masked variable (goal < 2 s; it took 44 s) vs the same prepare without it"
$GO test -run '^$' -bench 'BenchmarkPrepareMasked5MB|BenchmarkPrepareCore' -benchtime "${MASKED_BENCHTIME:-3x}" ./stages | tee "$out"
awk '/^BenchmarkPrepare(Masked5MB|Core)-/ { n=$1; sub(/-[0-9]+$/, "", n); v[n]=$3 }
  END { m = v["BenchmarkPrepareMasked5MB"]; c = v["BenchmarkPrepareCore"]
    if (m && c) printf "prepare with a 5 MB masked value %.0f ms (goal < 2000 ms), without it %.0f ms: +%.0f ms\n", m/1e6, c/1e6, (m-c)/1e6 }' "$out"

section "redaction vs io.Copy, 50 secrets (target >= 0.5x on 1 MiB chunks)"
$GO test -run '^$' -bench . ./pkg/redact | tee "$out"
awk '/^Benchmark/ { n=$1; sub(/-[0-9]+$/, "", n); v[n]=$(NF-1) }
  END { for (k in v) if (k ~ /^BenchmarkRedact/) { c=k; sub(/Redact/, "IOCopy", c); if (v[c]) printf "%s: %.0f MB/s vs %.0f MB/s = %.2fx\n", k, v[k], v[c], v[k]/v[c] } }' "$out"

section "dotenv: consumer prepare with 1/50/500 variables; store with 50 concurrent jobs"
$GO test -run '^$' -bench DotenvPrepare -benchtime 20x ./stages
$GO test -run '^$' -bench . ./pkg/dotenvstore

section "apply: ferry kubectl vs kubectl on one real API server (targets: seed >= 5x, 200 objects >= 3x, ferry/ssa-only <= 1.5x)"
# The kubectl side is the reference kubectl (the k8s.io/kubectl release ferry
# links, scripts/kubectl.sh; a no-op once built), first on the bench's PATH.
GO=$GO scripts/kubectl.sh
# E2E_LDFLAGS (from make bench) stamps the API server's version; see Makefile.
# The seed case takes ~1 s an iteration and two of them were too noisy to
# judge a 5x target (4.5x to 5.9x between runs); the 200-object cases take
# ~20 s an iteration.
(cd e2e && export PATH="$PWD/../bin:$PATH" && $GO test -ldflags "${E2E_LDFLAGS:-}" ./bench -run '^$' -bench 'Seed' -benchtime "${SEED_BENCHTIME:-8x}" | tee "$out" &&
  $GO test -ldflags "${E2E_LDFLAGS:-}" ./bench -run '^$' -bench '200|Discovery' -benchtime "${E2E_BENCHTIME:-2x}")
# The seed apply against its physical floor (BenchmarkSeedFloor: a fresh
# process that loads the kubeconfig and sends the two SSA PATCHes).
awk '/^BenchmarkSeedFloor/ { for (i = 3; i < NF; i += 2) v[$(i+1)] = $i }
  END { split("first reapply", ws, " ")
    for (k = 1; k <= 2; k++) { w = ws[k]; if (!v[w "-floor-ms"]) continue
      printf "seed %s: floor %.1f ms; ferry %.2fx (target <= 1.5x), ferry --server-side %.2fx; kubectl %.2fx, kubectl --server-side %.2fx the floor\n", w,
        v[w "-floor-ms"], v[w "-ferry/floor"], v[w "-ferry-ss/floor"], v[w "-kubectl/floor"], v[w "-kubectl-ss/floor"] } }' "$out"

section "deploy lock: what it adds to one seed deploy job when free, paired with the lock off (goal < 5 ms/job), and the handoff to a waiting job (goal < 1 s)"
# Jobs with the lock and without take turns at going first; each result is
# the median of the per-job differences and its 95% confidence interval.
(cd e2e && $GO test -ldflags "${E2E_LDFLAGS:-}" ./deploylock -run '^$' -bench 'LockFree|LockHandoff' -benchtime "${LOCK_BENCHTIME:-120x}" | tee "$out")
awk '/^BenchmarkLockFree/ { for (i = 3; i < NF; i += 2) v[$(i+1)] = $i }
  /^BenchmarkLockHandoff/ { for (i = 3; i < NF; i += 2) v[$(i+1)] = $i }
  END { if (v["added-ms/job"] != "") {
      printf "lock free, %d jobs each way: %+.1f ms per job wall (95%% CI %+.1f..%+.1f; goal < 5) = the holder'"'"'s start %.1f + the deploy'"'"'s two applies %+.1f + cleanup %.1f\n",
        v["pairs"], v["added-ms/job"], v["added-lo-ms"], v["added-hi-ms"], v["start-ms"], v["added-ms/job"] - v["start-ms"] - v["release-ms"], v["release-ms"]
      if (v["floor-ms"] != "") printf "  the floor, one write (a Lease created over a warm connection): %.1f ms; the lock adds %.1fx that per job\n", v["floor-ms"], v["added-ms/job"] / v["floor-ms"]
      printf "  first apply (takes the lock) %+.1f ms (CI %+.1f..%+.1f; apply %.1f ms with the lock off), later apply (sends nothing) %+.1f ms (CI %+.1f..%+.1f); the Lease gone %.1f ms after cleanup, not waited for; the holder %.0f ms CPU in the background\n",
        v["take-ms"], v["take-lo-ms"], v["take-hi-ms"], v["apply-off-ms"], v["held-ms"], v["held-lo-ms"], v["held-hi-ms"], v["lease-gone-ms"], v["holder-cpu-ms"] }
    if (v["handoff-ms"] != "") printf "lock handoff to the waiting job: median %.1f ms, max %.1f ms (goal < 1000)\n", v["handoff-ms"], v["handoff-max-ms"] }' "$out"
# What the holder's start really costs prepare (start-ms above is lockclient.Start
# alone): whole `ferry prepare`s of a job with a kubeconfig, lock on vs off, paired.
$GO test -run '^$' -bench 'BenchmarkLockPrepareCost' -benchtime "${LOCK_PREPARE_BENCHTIME:-60x}" ./stages | tee "$out"
awk '/^BenchmarkLockPrepareCost/ { for (i = 3; i < NF; i += 2) v[$(i+1)] = $i }
  END { if (v["lock-ms/prepare"] != "") printf "lock in a whole prepare (holder started, env written): %+.1f ms (median paired difference, 95%% CI %+.1f..%+.1f; prepare %.0f ms off, %.0f ms on)\n", v["lock-ms/prepare"], v["lock-lo-ms"], v["lock-hi-ms"], v["prepare-off-ms"], v["prepare-on-ms"] }' "$out"

section "docker: seed 000's compose pull + up -d through ferry's socket vs the docker CLI's own ssh:// (targets: v1 ferry >= 3x faster, v2 no slower), and the floor"
# Needs root (it starts sshd and dockerd in a network namespace) and the
# packages `make tools` installs; the benchmark says so and skips otherwise.
# compose v2 is built from source (scripts/compose.sh; a no-op once built).
GO=$GO scripts/compose.sh
$GO test -run '^$' -bench 'ComposeV1|ComposeV2' -benchtime "${DOCKER_BENCHTIME:-5x}" ./internal/docker/dockerjobs | tee "$out"
awk '/^BenchmarkComposeV[12]\/(ferry|ssh|floor)/ { n=$1; sub(/-[0-9]+$/, "", n); sub(/^BenchmarkCompose/, "", n); v[n]=$3 }
  END { if (v["V1/ferry"] && v["V1/ssh"]) printf "compose v1 pull+up: ferry %.0f ms, ssh:// %.0f ms: ferry %.1fx faster (target 3x)\n", v["V1/ferry"]/1e6, v["V1/ssh"]/1e6, v["V1/ssh"]/v["V1/ferry"]
    if (v["V1/floor"]) printf "  floor (compose on the daemon socket, no SSH) %.0f ms: ferry = %.2fx the floor\n", v["V1/floor"]/1e6, v["V1/ferry"]/v["V1/floor"]
    if (v["V2/ferry"] && v["V2/ssh"]) printf "compose v2 pull+up: ferry %.0f ms, ssh:// %.0f ms: ferry %.2fx as fast (goal >= 1x: no slower)\n", v["V2/ferry"]/1e6, v["V2/ssh"]/1e6, v["V2/ssh"]/v["V2/ferry"]
    if (v["V2/floor"]) printf "  floor (compose on the daemon socket, no SSH) %.0f ms: ferry = %.2fx the floor, ssh:// = %.2fx\n", v["V2/floor"]/1e6, v["V2/ferry"]/v["V2/floor"], v["V2/ssh"]/v["V2/floor"] }' "$out"

section "docker deploy lock: what it adds to a seed-000-style compose job when free, paired with --deploy-lock=false (goal < 5 ms/job), the handoff to a waiting job (goal < 1 s), the one-time lease image load"
# Root and the `make tools` packages, as above. The lock's own requests on
# the engine's socket (pkg/docker/enginelock), then whole jobs each way.
$GO test -run '^$' -bench 'LockFree|LockHandoff' -benchtime "${DOCKER_LOCK_BENCHTIME:-10x}" ./pkg/docker/enginelock | tee "$out"
$GO test -run '^$' -bench 'ComposeV1Lock' -benchtime "${DOCKER_LOCK_JOBS:-10x}" ./internal/docker/dockerjobs | tee -a "$out"
awk '/^Benchmark(LockFree|LockHandoff|ComposeV1Lock)/ { for (i = 3; i < NF; i += 2) v[$(i+1)] = $i }
  END { if (v["take-ms"] != "") printf "lock requests (engine socket): take a free lock %.1f ms (list + rename of the spare; %.1f ms without a spare: list + create); release %.1f ms (a remove: the lock of a short deploy never started), in the holder after cleanup returned, not on the job'"'"'s path; lease image load, once per engine: %.1f ms\n", v["take-ms"], v["take-create-ms"], v["release-ms"], v["load-ms"]
    if (v["handoff-ms"] != "") printf "lock handoff to the waiting job: %.1f ms (goal < 1000)\n", v["handoff-ms"]
    if (v["added-deploy-ms"] != "") printf "seed-000-style job (compose v1 pull + up -d), medians: the deploy request'"'"'s wait for the take, as the job'"'"'s holder timed it %.1f ms (goal < 5 ms per job, with cleanup'"'"'s part below; the take starts at the deploy command'"'"'s handshake); deploy stage %.0f ms with the lock off, %.0f ms on (paired difference %+.1f ms, 95%% CI %+.1f..%+.1f: whole jobs, noisy); cleanup %.1f ms off, %.1f ms on (paired difference %+.1f ms, 95%% CI %+.1f..%+.1f: the same code each way, which only signals the holder); the lock gone from the engine %.1f ms after cleanup returned\n", v["take-in-job-ms"], v["deploy-off-ms"], v["deploy-on-ms"], v["added-deploy-ms"], v["added-deploy-lo-ms"], v["added-deploy-hi-ms"], v["cleanup-off-ms"], v["cleanup-on-ms"], v["added-cleanup-ms"], v["added-cleanup-lo-ms"], v["added-cleanup-hi-ms"], v["lock-gone-ms"] }' "$out"
