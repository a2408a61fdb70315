package stages

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Options are ferry's core flags. Every stage subcommand accepts all of them
// (and every feature's), so an admin can give the same flags to all four
// *_args of config.toml.
type Options struct {
	StateDir    string        // private per-job state, never inside the builds dir
	BuildsDir   string        // builds root; config adds <short-token>/<concurrent-project-id>
	CacheDir    string        // cache_dir reported by config
	StaleAfter  time.Duration // age after which an abandoned job state dir is swept
	GracePeriod time.Duration // SIGTERM -> SIGKILL delay for the job's processes
	PassEnv     StringList    // extra host variables passed to the job
	ServerURL   string        // the runner's own GitLab URL: namespaces job keys (jobenv.Identity)

	fs *flag.FlagSet
}

// StringList is a repeatable, comma-separated flag value.
type StringList []string

func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set appends the comma-separated names in v.
func (l *StringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// EnvName is the environment fallback of a flag: FERRY_<NAME>, upper case,
// dashes to underscores.
func EnvName(flagName string) string {
	return "FERRY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// NewFlagSet registers the core flags and every feature's flags into a new
// flag set named name. Defaults under $HOME come from home ("" when unknown:
// then the flag must be given).
func NewFlagSet(name, home string) (*flag.FlagSet, *Options) {
	o := &Options{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by the caller, on one line
	def := func(sub string) string {
		if home == "" {
			return ""
		}
		return filepath.Join(home, sub)
	}
	fs.StringVar(&o.StateDir, "state-dir", def(".ferry"), "private per-job state root (mode 0700; never inside --builds-dir)")
	fs.StringVar(&o.BuildsDir, "builds-dir", def("builds"), "builds root; each job builds in <builds-dir>/<runner-short-token>/<concurrent-project-id>")
	fs.StringVar(&o.CacheDir, "cache-dir", def("cache"), "cache_dir reported to the runner")
	fs.DurationVar(&o.StaleAfter, "stale-after", 24*time.Hour, "prepare removes state dirs of jobs older than this (and than their job timeout + 1h)")
	fs.DurationVar(&o.GracePeriod, "grace-period", 10*time.Second, "after SIGTERM, how long the job's processes get before SIGKILL")
	fs.StringVar(&o.ServerURL, "server-url", "", "the GitLab URL of the runner's config.toml (url): names the instance in job keys; default: the origin of the payload's clone URL (CI_SERVER_URL only when that is not http(s))")
	fs.Var(&o.PassEnv, "pass-env", "extra host variable names passed to the job script (comma-separated, repeatable)")
	for _, f := range Features() {
		if f.Flags != nil {
			f.Flags(fs)
		}
	}
	o.fs = fs
	return fs, o
}

// ParseOptions parses args (flags first, then positional arguments) with
// FERRY_<NAME> fallbacks looked up in getenv. The flag wins over the variable.
func ParseOptions(name string, args []string, getenv func(string) (string, bool)) (*Options, []string, error) {
	home, ok := getenv("HOME")
	if !ok || home == "" {
		home = homeDir()
	}
	fs, o := NewFlagSet(name, home)
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := getenv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("ferry: %s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, fmt.Errorf("ferry %s: %w", name, err)
	}
	if o.GracePeriod < 0 {
		return nil, nil, fmt.Errorf("ferry %s: --grace-period must not be negative", name)
	}
	return o, fs.Args(), nil
}

// Lookup returns a flag of the parsed set (core or feature), nil if unknown.
func (o *Options) Lookup(name string) *flag.Flag {
	if o.fs == nil {
		return nil
	}
	return o.fs.Lookup(name)
}

// PrintDefaults writes every flag with its variable and default, sorted.
func PrintDefaults(w io.Writer) {
	fs, _ := NewFlagSet("ferry", "$HOME")
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" {
			def = " (default " + f.DefValue + ")"
		}
		lines = append(lines, fmt.Sprintf("  --%s\n      %s%s\n      env %s", f.Name, f.Usage, def, EnvName(f.Name)))
	})
	sort.Strings(lines)
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

// homeDir is the fallback when HOME is not in the environment.
func homeDir() string {
	h, _ := os.UserHomeDir()
	return h
}
