package sshdial

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Resolved is how the runner user's OpenSSH would connect to a hand-made
// context's host: its ~/.ssh/config applied (Host aliases, User, Port,
// IdentityFile, UserKnownHostsFile).
type Resolved struct {
	Target          Target
	KeyFiles        []string
	KnownHostsFiles []string
}

// ResolveOpenSSH asks `ssh -G` (when ssh is installed: the hand-made setup
// needed it) how the runner user would reach raw (an ssh:// URL whose user
// may be missing), and falls back to OpenSSH's defaults under home.
func ResolveOpenSSH(ctx context.Context, raw, home string) (Resolved, error) {
	t, err := parseLoose(raw)
	if err != nil {
		return Resolved{}, err
	}
	r := Resolved{Target: t,
		KeyFiles:        []string{filepath.Join(home, ".ssh/id_ed25519"), filepath.Join(home, ".ssh/id_ecdsa"), filepath.Join(home, ".ssh/id_rsa")},
		KnownHostsFiles: []string{filepath.Join(home, ".ssh/known_hosts"), "/etc/ssh/ssh_known_hosts"}}
	path, err := exec.LookPath("ssh")
	if err != nil {
		if r.Target.User == "" {
			r.Target.User = filepath.Base(home)
		}
		return r.existing(), nil
	}
	args := []string{"-G"}
	if t.User != "" {
		args = append(args, "-l", t.User)
	}
	if t.Port != 0 {
		args = append(args, "-p", strconv.Itoa(t.Port))
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append(args, "--", t.Host)...)
	out, err := cmd.Output()
	if err != nil {
		return r.existing(), nil
	}
	// ssh expands ~ with the passwd entry's home (and prints known hosts
	// files expanded); ferry uses the runner's HOME, the same directory on
	// a real runner service, and the one tests can point elsewhere.
	pwHome := ""
	if u, err := user.Current(); err == nil {
		pwHome = u.HomeDir
	}
	expand := func(p string) string {
		if strings.HasPrefix(p, "~/") {
			return filepath.Join(home, p[2:])
		}
		if pwHome != "" && pwHome != home && strings.HasPrefix(p, pwHome+"/") {
			return filepath.Join(home, p[len(pwHome)+1:])
		}
		return p
	}
	var keys, known []string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		switch k {
		case "hostname":
			r.Target.Host = v
		case "user":
			r.Target.User = v
		case "port":
			if n, err := strconv.Atoi(v); err == nil {
				r.Target.Port = n
			}
		case "identityfile":
			keys = append(keys, expand(v))
		case "userknownhostsfile", "globalknownhostsfile":
			for _, f := range strings.Fields(v) {
				known = append(known, expand(f))
			}
		}
	}
	if len(keys) > 0 {
		r.KeyFiles = keys
	}
	if len(known) > 0 {
		r.KnownHostsFiles = known
	}
	return r.existing(), nil
}

// existing drops files that do not exist (knownhosts refuses them; ssh
// skips them).
func (r Resolved) existing() Resolved {
	if r.Target.Port == 0 {
		r.Target.Port = 22
	}
	keep := func(in []string) []string {
		var out []string
		for _, f := range in {
			if _, err := os.Stat(f); err == nil {
				out = append(out, f)
			}
		}
		return out
	}
	r.KeyFiles, r.KnownHostsFiles = keep(r.KeyFiles), keep(r.KnownHostsFiles)
	return r
}

// parseLoose is ParseURL without the user requirement (ssh's config may
// give it), Port 0 when not given.
func parseLoose(raw string) (Target, error) {
	withUser := raw
	if !strings.Contains(strings.TrimPrefix(raw, "ssh://"), "@") {
		withUser = "ssh://ferry-placeholder@" + strings.TrimPrefix(raw, "ssh://")
	}
	t, err := ParseURL(withUser)
	if err != nil {
		return Target{}, err
	}
	if t.User == "ferry-placeholder" {
		t.User = ""
	}
	hostport := strings.TrimPrefix(withUser, "ssh://")
	hostport = hostport[strings.Index(hostport, "@")+1:]
	if i := strings.IndexByte(hostport, '/'); i >= 0 {
		hostport = hostport[:i]
	}
	if !strings.Contains(strings.TrimPrefix(hostport, "["), ":") || strings.HasSuffix(hostport, "]") {
		t.Port = 0
	}
	return t, nil
}
