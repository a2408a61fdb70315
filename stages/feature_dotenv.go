package stages

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/dotenv"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore"
	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
	"gitlab.com/ferry-ci/ferry/pkg/namelist"
)

// DotenvSecretKeysVar is the producer job's variable naming the keys of its
// dotenv report that are secret (comma-separated names or patterns). It is
// ferry's own: the report itself stays in GitLab's strict format.
const DotenvSecretKeysVar = "FERRY_DOTENV_SECRET_KEYS"

// dotenvFlags are the runner admin's --dotenv-* settings (docs/dotenv.md).
var dotenvFlags struct {
	store         string
	dir           string
	kubeconfig    string
	namespace     string
	lenient       bool
	strict        bool
	secretKeys    StringList
	maxVariables  int
	defaultExpiry time.Duration
	sweepEvery    time.Duration
}

func init() {
	Register(Feature{
		Name: "dotenv",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dotenvFlags.store, "dotenv-store", "dir", "where dotenv reports live between jobs: dir, kubernetes, or off")
			fs.StringVar(&dotenvFlags.dir, "dotenv-dir", "", "directory of the dir store (default <state-dir>/dotenv)")
			fs.StringVar(&dotenvFlags.kubeconfig, "dotenv-kubeconfig", "", "kubeconfig of the kubernetes store (default: in-cluster config)")
			fs.StringVar(&dotenvFlags.namespace, "dotenv-namespace", "", "namespace of the kubernetes store's Secrets")
			fs.BoolVar(&dotenvFlags.strict, "dotenv-strict", false, "fail the job when a stored dotenv report is not authentic (altered, forged or replayed); default: a warning, and the job goes on without its variables")
			fs.BoolVar(&dotenvFlags.lenient, "dotenv-lenient", false, "accept blank lines and # comments in dotenv reports (GitLab rejects them)")
			fs.Var(&dotenvFlags.secretKeys, "dotenv-secret-keys", "dotenv keys whose values are masked in job logs (comma-separated names or patterns like *_TOKEN)")
			fs.IntVar(&dotenvFlags.maxVariables, "dotenv-max-variables", dotenv.MaxVariables, "GitLab's per-report variable limit: beyond it ferry warns that GitLab would refuse the report")
			fs.DurationVar(&dotenvFlags.defaultExpiry, "dotenv-default-expiry", dotenvstore.DefaultExpiry, "how long a report is kept when the artifact has no expire_in")
			fs.DurationVar(&dotenvFlags.sweepEvery, "dotenv-sweep-every", 10*time.Minute, "at most one sweep of expired reports per this period (run by prepare)")
		},
		Prepare:     dotenvPrepare,
		BeforeStage: dotenvBeforeStage,
		RunsBefore:  captureStage,
		NeedsEngine: func(sub, stage string) bool {
			return dotenvKubeStore() && (sub == "prepare" || captureStage(stage))
		},
	})
}

// openDotenvStore opens the admin's store; nil when it is off.
func openDotenvStore(o *Options) (dotenvstore.Store, error) {
	switch dotenvFlags.store {
	case "off", "none":
		return nil, nil
	case "dir", "":
		dir := dotenvFlags.dir
		if dir == "" {
			if o.StateDir == "" {
				return nil, errors.New("ferry: HOME is not set: give --dotenv-dir or --state-dir")
			}
			dir = filepath.Join(o.StateDir, "dotenv")
		}
		return dotenvstore.NewDir(dir)
	case "kubernetes", "kube":
		if engine == nil {
			return nil, errNoEngine
		}
		return engine.DotenvKubeStore(dotenvFlags.kubeconfig, dotenvFlags.namespace)
	default:
		return nil, fmt.Errorf("ferry: --dotenv-store=%q: want dir, kubernetes or off", dotenvFlags.store)
	}
}

// dotenvKubeStore reports whether reports live in Kubernetes Secrets.
func dotenvKubeStore() bool {
	return dotenvFlags.store == "kubernetes" || dotenvFlags.store == "kube"
}

// captureStage reports whether a run stage is one dotenvBeforeStage
// captures reports before.
func captureStage(stage string) bool {
	return stage == "upload_artifacts_on_success" || stage == "upload_artifacts_on_failure"
}

// matchAny reports whether key matches one of the comma-separated names or
// path.Match patterns.
func matchAny(key string, patterns []string) bool {
	for _, p := range patterns {
		if p == key {
			return true
		}
		if ok, err := path.Match(p, key); err == nil && ok {
			return true
		}
	}
	return false
}

func splitList(s string) []string {
	var l StringList
	l.Set(s)
	return l
}

// dotenvKey is the store key of the current job: its id and instance from
// the job's identity (the payload, never CI_JOB_ID), name and project from
// the payload. The pipeline id exists only as a variable; a job can only
// misstate its own, in a report it seals with its own token.
func dotenvKey(j *Job) dotenvstore.Key {
	id := j.State.Job()
	pipeline, _ := strconv.ParseInt(j.Env.JobVars()["CI_PIPELINE_ID"], 10, 64)
	k := dotenvstore.Key{ServerURL: id.ServerURL, JobID: id.ID, PipelineID: pipeline}
	if j.Payload != nil {
		k.ProjectID = j.Payload.JobInfo.ProjectID
		k.JobName = j.Payload.JobInfo.Name
	}
	return k
}

// --- capture: the producer's upload stages ---

// dotenvBeforeStage stores the job's dotenv reports before the upload
// stage that GitLab would upload them in (the artifact's `when`).
func dotenvBeforeStage(ctx context.Context, j *Job, stage string) error {
	var onFailure bool
	switch stage {
	case "upload_artifacts_on_success":
	case "upload_artifacts_on_failure":
		onFailure = true
	default:
		return nil
	}
	var reports []jobenv.Artifact
	for _, a := range j.Payload.Artifacts {
		if a.ArtifactType != "dotenv" {
			continue
		}
		switch a.When {
		case "always":
		case "on_failure":
			if !onFailure {
				continue
			}
		default: // "" and on_success
			if onFailure {
				continue
			}
		}
		reports = append(reports, a)
	}
	if len(reports) == 0 {
		return nil // no store access for jobs without a report
	}
	if dotenvFlags.store == "off" || dotenvFlags.store == "none" {
		return nil
	}
	return captureDotenv(ctx, j, reports)
}

func captureDotenv(ctx context.Context, j *Job, reports []jobenv.Artifact) error {
	start := time.Now()
	projectDir, _ := j.Env.JobVar("CI_PROJECT_DIR")
	if projectDir == "" {
		return errors.New("ferry: dotenv: CUSTOM_ENV_CI_PROJECT_DIR is not set: cannot find the dotenv report")
	}
	vars := j.Env.JobVars()
	secretPatterns := append(splitList(vars[DotenvSecretKeysVar]), dotenvFlags.secretKeys...)
	masked := j.Payload.MaskedValues()

	rep := &dotenvstore.Report{}
	pos := map[string]int{}
	expires, expiryText := time.Time{}, "never"
	anyExpiry := false
	for _, a := range reports {
		exp, text := reportExpiry(j, a)
		// Several reports: keep the longest life.
		if !anyExpiry || (!expires.IsZero() && (exp.IsZero() || exp.After(expires))) {
			expires, expiryText = exp, text
		}
		anyExpiry = true
		for _, p := range a.Paths {
			files, err := reportFiles(projectDir, p)
			if err != nil {
				return failure.Build(err)
			}
			if len(files) == 0 {
				// As gitlab-runner's uploader: a warning, not a failure.
				j.Log.Warnf("WARNING: %s: no matching files. Ensure that the artifact path is relative to the working directory (%s)", p, projectDir)
				continue
			}
			for _, f := range files {
				data, err := os.ReadFile(filepath.Join(projectDir, f))
				if err != nil {
					return failure.Build(fmt.Errorf("ferry: dotenv report %s: %w", f, err))
				}
				r, err := dotenv.Parse(f, data, dotenv.Options{Lenient: dotenvFlags.lenient, MaxVariables: dotenvFlags.maxVariables})
				if err != nil {
					return failure.Build(fmt.Errorf("ferry: dotenv report %w", err))
				}
				for _, w := range r.Warnings {
					j.Log.Warnf("dotenv: %s", w)
				}
				rep.Files = append(rep.Files, f)
				for _, v := range r.Vars {
					if i, ok := pos[v.Key]; ok {
						rep.Vars[i] = v // a later file wins, as later lines do
						continue
					}
					pos[v.Key] = len(rep.Vars)
					rep.Vars = append(rep.Vars, v)
				}
			}
		}
	}
	if len(rep.Files) == 0 {
		return nil
	}
	var names []string
	for _, v := range rep.Vars {
		names = append(names, v.Key)
		if matchAny(v.Key, secretPatterns) || containsSecret(v.Value, masked) {
			rep.SecretKeys = append(rep.SecretKeys, v.Key)
		}
	}
	rep.Expires = expires
	store, err := openDotenvStore(j.Options)
	if err != nil || store == nil {
		return err
	}
	k := dotenvKey(j)
	// Sealed with the job's token: consumers accept it only if it is
	// exactly what this job stored (docs/dotenv.md, "Authenticated reports").
	if err := dotenvstore.Seal(k, rep, j.State.Job().Token); err != nil {
		return err
	}
	if err := store.Put(ctx, k, rep); err != nil {
		return err // the host's store: a system failure
	}
	secretNote := ""
	if n := len(rep.SecretKeys); n > 0 {
		secretNote = fmt.Sprintf(", %d masked (%s)", n, strings.Join(rep.SecretKeys, ", "))
	}
	j.Log.Infof("dotenv: stored %s from %s for later jobs%s, expires %s (%s)",
		countNames(names), strings.Join(rep.Files, ", "), secretNote, expiryText, time.Since(start).Round(time.Millisecond))
	return nil
}

func countNames(names []string) string {
	if len(names) == 0 {
		return "no variables"
	}
	s := "variable"
	if len(names) > 1 {
		s = "variables"
	}
	return fmt.Sprintf("%d %s (%s)", len(names), s, namelist.Short(names, 20))
}

// checkEnvTotal refuses dotenv variables that together would not fit in the
// job script's environment (each report is checked at capture; several
// producers can still add up).
func checkEnvTotal(add []jobstate.EnvVar, producers []string) error {
	total := 0
	for _, e := range add {
		total += dotenv.EnvSize(e.Key, e.Value)
	}
	if total > dotenv.MaxEnvTotal {
		return failure.Build(fmt.Errorf("ferry: dotenv: the variables from %s hold %d bytes of environment; ferry refuses more than %d bytes (a whole environment is limited to ARG_MAX, typically 2 MiB, shared with the job's own variables)",
			namelist.Short(producers, 0), total, dotenv.MaxEnvTotal))
	}
	return nil
}

// containsSecret: a report value that carries one of the job's masked
// values stays masked downstream (GitLab would hand it out in clear).
func containsSecret(v string, masked []string) bool {
	for _, m := range masked {
		if len(m) >= 8 && strings.Contains(v, m) {
			return true
		}
	}
	return false
}

// reportExpiry turns the artifact's expire_in into an expiry time.
func reportExpiry(j *Job, a jobenv.Artifact) (time.Time, string) {
	if a.ExpireIn != "" {
		d, never, err := dotenvstore.ParseExpireIn(a.ExpireIn)
		switch {
		case err != nil:
			j.Log.Warnf("dotenv: artifacts:expire_in %q: %v: keeping the report for %s", a.ExpireIn, err, dotenvFlags.defaultExpiry)
		case never:
			return time.Time{}, "never"
		default:
			return time.Now().Add(d).UTC(), "in " + a.ExpireIn
		}
	}
	return time.Now().Add(dotenvFlags.defaultExpiry).UTC(), "in " + dotenvFlags.defaultExpiry.String()
}

// reportFiles resolves an artifact path (a file or a glob, relative to the
// project dir) to files inside the project dir. A path that leaves it, by
// ".." or a symlink, is refused like the runner's uploader does.
func reportFiles(projectDir, p string) ([]string, error) {
	root, err := filepath.EvalSymlinks(projectDir)
	if err != nil {
		return nil, fmt.Errorf("ferry: dotenv: project dir %s: %w", projectDir, err)
	}
	matches, err := filepath.Glob(filepath.Join(root, p))
	if err != nil {
		return nil, fmt.Errorf("ferry: dotenv report path %q: %w", p, err)
	}
	var out []string
	for _, m := range matches {
		real, err := filepath.EvalSymlinks(m)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ferry: dotenv report %s: %w", p, err)
		}
		rel, err := filepath.Rel(root, real)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil, fmt.Errorf("ferry: dotenv report %s: %s is outside the project directory", p, real)
		}
		info, err := os.Stat(real)
		if err != nil {
			return nil, fmt.Errorf("ferry: dotenv report %s: %w", p, err)
		}
		if info.IsDir() {
			return nil, fmt.Errorf("ferry: dotenv report %s: is a directory", p)
		}
		orig, _ := filepath.Rel(root, m)
		out = append(out, orig)
	}
	sort.Strings(out)
	return out, nil
}

// --- inject: the consumer's prepare ---

// dotenvVar is one variable headed for the consumer.
type dotenvVar struct {
	key, value, producer string
	secret               bool
}

func dotenvPrepare(ctx context.Context, j *Job) error {
	if dotenvFlags.store == "off" || dotenvFlags.store == "none" {
		return nil
	}
	if err := maybeSweepDotenv(ctx, j); err != nil {
		j.Log.Warnf("dotenv: sweep of expired reports: %v", err) // another job's leftovers must not fail this one
	}
	if j.Payload == nil || len(j.Payload.Dependencies) == 0 {
		return nil // no store access
	}
	start := time.Now()
	store, err := openDotenvStore(j.Options)
	if err != nil || store == nil {
		return err
	}
	vars, err := loadDotenv(ctx, j, store)
	if err != nil {
		return err
	}
	return injectDotenv(j, vars, start)
}

// loadDotenv reads the reports of the payload's dependencies[], in order;
// a later dependency wins a key both define.
func loadDotenv(ctx context.Context, j *Job, store dotenvstore.Store) ([]dotenvVar, error) {
	server := j.State.Job().ServerURL
	var out []dotenvVar
	pos := map[string]int{}
	for _, dep := range j.Payload.Dependencies {
		k := dotenvstore.Key{ServerURL: server, JobID: dep.ID, JobName: dep.Name}
		r, err := store.Get(ctx, k)
		if errors.Is(err, dotenvstore.ErrNotFound) {
			if strings.Contains(err.Error(), "expired") {
				j.Log.Warnf("dotenv: the report of %s has expired: its variables are not set", dep.Name)
			}
			continue // most dependencies have no dotenv report
		}
		if err == nil {
			// The producer's token, from this job's payload: only the
			// producer could have sealed what verifies with it.
			err = r.Verify(dep.Token, k)
		}
		if errors.Is(err, dotenvstore.ErrNotAuthentic) || errors.Is(err, dotenvstore.ErrInvalid) {
			if err := refuseReport(j, dep, err); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		secret := map[string]bool{}
		for _, s := range r.SecretKeys {
			secret[s] = true
		}
		for _, v := range r.Vars {
			dv := dotenvVar{key: v.Key, value: v.Value, producer: dep.Name, secret: secret[v.Key]}
			if i, ok := pos[v.Key]; ok {
				j.Log.Warnf("dotenv: %s from %s replaces the one from %s (the later dependency wins)", v.Key, dep.Name, out[i].producer)
				// Moved to the end: the log then lists each producer's
				// keys in its own order.
				dv.secret = dv.secret || out[i].secret
				out = append(out[:i], out[i+1:]...)
				for k, p := range pos {
					if p > i {
						pos[k] = p - 1
					}
				}
			}
			pos[v.Key] = len(out)
			out = append(out, dv)
		}
	}
	return out, nil
}

// refuseReport says, in one line naming the producer job, that its stored
// report is not used; with --dotenv-strict the job fails instead (a system
// failure: the store on the host was tampered with, not the job's input).
func refuseReport(j *Job, dep jobenv.Dependency, why error) error {
	reason := strings.TrimSuffix(why.Error(), ": "+dotenvstore.ErrNotAuthentic.Error())
	if dotenvFlags.strict {
		return fmt.Errorf("ferry: dotenv: the stored report of job %d (%s) is refused: %s (--dotenv-strict)", dep.ID, dep.Name, reason)
	}
	j.Log.Warnf("dotenv: the stored report of job %d (%s) is refused: %s: its variables are not set", dep.ID, dep.Name, reason)
	return nil
}

func injectDotenv(j *Job, vars []dotenvVar, start time.Time) error {
	if len(vars) == 0 {
		return nil
	}
	jobVars := j.Env.JobVars()
	masked := j.Payload.MaskedValues()
	var producers []string
	byProducer := map[string][]string{}
	note := func(producer, text string) {
		if _, ok := byProducer[producer]; !ok {
			producers = append(producers, producer)
		}
		byProducer[producer] = append(byProducer[producer], text)
	}
	applied := 0
	var add []jobstate.EnvVar
	for _, v := range vars {
		if strings.HasPrefix(v.key, "FERRY_") {
			j.Log.Warnf("dotenv: %s from %s not set: FERRY_* variables are ferry's own", v.key, v.producer)
			continue
		}
		// GitLab hands dotenv values to the runner as non-raw variables:
		// $NAME is expanded against the consuming job's variables, never
		// ferry's own environment.
		value := os.Expand(v.value, func(name string) string {
			if name == "$" {
				return "$"
			}
			return jobVars[name]
		})
		if err := dotenv.CheckEnvString(v.key, value); err != nil {
			// Within the limit in the report, over it once $VARIABLES are
			// expanded: the job could not start its script.
			return failure.Build(fmt.Errorf("ferry: dotenv: from %s, after expanding $VARIABLES: %w", v.producer, err))
		}
		secret := v.secret || matchAny(v.key, dotenvFlags.secretKeys) || containsSecret(value, masked)
		if jv, ok := j.Payload.Variable(v.key); ok && !jv.Public {
			// Not public: an instance, group, project or pipeline variable
			// (or GitLab's own dotenv) ranks above dotenv in GitLab.
			if jv.Value == value {
				note(v.producer, v.key+" (same value already set by GitLab)")
			} else {
				j.Log.Warnf("dotenv: %s from %s not set: the job's %s variable takes precedence, as in GitLab", v.key, v.producer, v.key)
			}
			continue
		}
		// A secret value is registered with the redactor (secrets.json,
		// encoded forms included) and never written to GITLAB_ENV.
		add = append(add, jobstate.EnvVar{Key: v.key, Value: value, Secret: secret})
		applied++
		if secret {
			note(v.producer, v.key+" (masked)")
		} else {
			note(v.producer, v.key)
		}
	}
	if err := checkEnvTotal(add, producers); err != nil {
		return err
	}
	// One write of env.json for all of them (AddEnv per key costs an fsync each).
	if err := j.State.AddEnvs(add); err != nil {
		return err
	}
	for _, p := range producers {
		j.Log.Infof("dotenv: %s from %s", strings.Join(byProducer[p], ", "), p)
	}
	j.Log.Infof("dotenv: %d variable(s) from %d job(s) set in %s", applied, len(producers), time.Since(start).Round(time.Microsecond))
	return nil
}

// maybeSweepDotenv removes expired reports, at most once per
// --dotenv-sweep-every on this host (stamp in the state root).
func maybeSweepDotenv(ctx context.Context, j *Job) error {
	if dotenvFlags.sweepEvery <= 0 || j.Options.StateDir == "" {
		return nil
	}
	stamp, err := dotenvstore.NewDir(filepath.Join(j.Options.StateDir, "dotenv"))
	if dotenvFlags.store == "dir" && dotenvFlags.dir != "" {
		stamp, err = dotenvstore.NewDir(dotenvFlags.dir)
	}
	if err != nil {
		return err
	}
	now := time.Now()
	if !stamp.SweepDue(now, dotenvFlags.sweepEvery) {
		return nil
	}
	store, err := openDotenvStore(j.Options)
	if err != nil || store == nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := store.Sweep(sctx, now)
	if n > 0 {
		j.Log.Infof("dotenv: removed %d expired report(s)", n)
	}
	return err
}
