package stages

import (
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/jobenv"
)

// The admin's seed lists: a runner secret or ferry's own dir is refused
// with one line naming the flag and the entry; the secrets inside a seeded
// directory are skipped; --home-seed-skip drops a default entry.
func TestHomeSeedPlan(t *testing.T) {
	saved := homeOpts
	defer func() { homeOpts = saved }()
	env := jobenv.FromEnviron([]string{"HOME=/home/runner"})
	o := &Options{StateDir: "/home/runner/.ferry", BuildsDir: "/home/runner/builds", CacheDir: "/srv/cache"}
	for _, bad := range []string{".ssh/id_ed25519", ".docker/config.json", ".kube", ".config/gcloud/x", ".ferry/jobs", "builds", "../etc/passwd", "/etc/passwd"} {
		homeOpts.seed, homeOpts.seedSkip = StringList{bad}, nil
		_, err := homeSeedPlan(env, o)
		if err == nil {
			t.Errorf("--home-seed=%s accepted", bad)
			continue
		}
		if !strings.HasPrefix(err.Error(), "ferry: --home-seed: ") || !strings.Contains(err.Error(), strings.TrimPrefix(bad, "/")) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--home-seed=%s: %v", bad, err)
		}
	}
	homeOpts.seed, homeOpts.seedSkip = StringList{".config", ".curlrc"}, StringList{".ssh/known_hosts"}
	p, err := homeSeedPlan(env, o)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(p.Entries, ",")
	if got != ".config,.curlrc,.gitconfig,.config/git/config,.ssh/config" {
		t.Errorf("entries %s", got)
	}
	for rel, skip := range map[string]bool{".config/gcloud/credentials.db": true, ".config/gh/hosts.yml": true, ".config/helm/repositories.yaml": false, ".ssh/config": false, ".ssh/known_hosts": true, ".ssh/id_rsa": true} {
		if p.Skip(rel) != skip {
			t.Errorf("Skip(%s) = %v, want %v", rel, !skip, skip)
		}
	}
}
