package stages

import (
	"flag"
	"io"
	"strings"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"gitlab.com/ferry-ci/ferry/pkg/hostcheck"
	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
	"gitlab.com/ferry-ci/ferry/pkg/sandbox"
	"gitlab.com/ferry-ci/ferry/pkg/tmpns"
	"gitlab.com/ferry-ci/ferry/pkg/version"
)

// check runs `ferry check` (pkg/hostcheck) with ferry's own option parsing,
// so that a runner's *_args are read exactly as its stages will read them.
func check(args []string, stdout, stderr io.Writer, b Binary) int {
	return hostcheck.Main(args, stdout, stderr, hostcheck.Hooks{
		Version:   version.Version,
		Engine:    b.Handoff == nil,
		ParseArgs: CheckStageArgs,
		Sandbox:   sandbox.Probe,
		PrivateTmp: func(uid, gid int) error {
			if uid < 0 {
				return tmpns.Probe(selfExe)
			}
			return tmpns.ProbeAs(selfExe, uid, gid)
		},
		LocateEngine: func(root string) (string, error) {
			return enginebin.Locate(root, jobenv.FromOS().LookupEnv, nil)
		},
		InstalledEngine: enginebin.Installed,
		EmbeddedEngine:  enginebin.Embedded(),
	})
}

// CheckStageArgs (ferry check's ParseArgs) parses a stage's *_args (args[0] the subcommand) as that
// stage would in a runner process whose environment is env.
func CheckStageArgs(args []string, env map[string]string) (hostcheck.StageSettings, error) {
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	o, rest, err := ParseOptions(args[0], args[1:], getenv)
	if err != nil {
		return hostcheck.StageSettings{}, err
	}
	s := hostcheck.StageSettings{
		StateDir:       o.StateDir,
		BuildsDir:      o.BuildsDir,
		CacheDir:       o.CacheDir,
		GracePeriod:    o.GracePeriod,
		ServerURL:      o.ServerURL,
		UnexpectedArgs: rest,
	}
	_, s.StateDirGiven = env[EnvName("state-dir")]
	o.fs.Visit(func(f *flag.Flag) {
		if f.Name == "state-dir" {
			s.StateDirGiven = true
		}
	})
	// Every feature's check in prepare (Kubernetes, Docker, ...) has a
	// --<feature>-preflight-timeout; prepare may take all of them.
	o.fs.VisitAll(func(f *flag.Flag) {
		if g, ok := f.Value.(flag.Getter); ok && strings.HasSuffix(f.Name, "-preflight-timeout") {
			d, _ := g.Get().(time.Duration)
			s.Preflight += d
			s.PreflightFlags = append(s.PreflightFlags, "--"+f.Name)
		}
	})
	return s, nil
}
