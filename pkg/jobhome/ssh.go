package jobhome

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// OpenSSH takes ~ (in its defaults ~/.ssh/config, ~/.ssh/known_hosts,
// ~/.ssh/id_*, and in every path of a config file) from the passwd entry,
// never from $HOME. So the job's ssh, scp and sftp (and git over ssh, and
// the docker CLI's ssh helper, which run `ssh` from PATH) are reached
// through a shim in the job's bin dir: argv[0] ssh|scp|sftp execs the real
// one from PATH with `-F <SSHConfigVar>`, a config ferry writes per job that
// includes the project home's ~/.ssh/config and the system's, then sets the
// home's known_hosts and key files as the defaults.

// SSHShimNames are the programs the shim stands in for.
var SSHShimNames = []string{"ssh", "scp", "sftp"}

// SSHConfigVar names, in the job's environment, the config the shim gives.
const SSHConfigVar = "FERRY_SSH_CONFIG"

// IsSSHShim reports whether argv0 is one of the shim's names.
func IsSSHShim(argv0 string) bool {
	b := filepath.Base(argv0)
	for _, n := range SSHShimNames {
		if b == n {
			return true
		}
	}
	return false
}

// SSHConfig is the per-job ssh config for home. First obtained value wins
// in ssh_config: the project's own ~/.ssh/config first (seeded from the
// runner user's), then the system's, then ferry's defaults pointing at the
// home instead of the passwd entry's. extraKeys are more default identity
// files (the runner user's, when the admin let jobs use them).
func SSHConfig(home string, extraKeys []string) []byte {
	var b strings.Builder
	b.WriteString("# Written by ferry for this job: ssh reads the job's HOME, not the runner user's (docs/home.md).\n")
	fmt.Fprintf(&b, "Include %s\n", quote(filepath.Join(home, ".ssh", "config")))
	b.WriteString("Include /etc/ssh/ssh_config\n")
	b.WriteString("Host *\n")
	fmt.Fprintf(&b, "  UserKnownHostsFile %s %s\n", quote(filepath.Join(home, ".ssh", "known_hosts")), quote(filepath.Join(home, ".ssh", "known_hosts2")))
	for _, k := range []string{"id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk"} {
		fmt.Fprintf(&b, "  IdentityFile %s\n", quote(filepath.Join(home, ".ssh", k)))
	}
	for _, k := range extraKeys {
		fmt.Fprintf(&b, "  IdentityFile %s\n", quote(k))
	}
	return []byte(b.String())
}

func quote(p string) string {
	if strings.ContainsAny(p, " \t\"") {
		return `"` + p + `"`
	}
	return p
}

// SSHShim runs the real program argv[0] names, found on PATH after the
// shim's own entries, with the job's ssh config unless the caller gave
// one (-F). It only returns on failure.
func SSHShim(argv []string, stderr io.Writer) int {
	name := filepath.Base(argv[0])
	real, err := findReal(name)
	if err != nil {
		fmt.Fprintf(stderr, "ferry: %s: %v\n", name, err)
		return 127
	}
	args := []string{name}
	if cfg := os.Getenv(SSHConfigVar); cfg != "" && !hasConfigFlag(argv[1:]) {
		if _, err := os.Stat(cfg); err == nil {
			args = append(args, "-F", cfg)
		}
	}
	args = append(args, argv[1:]...)
	err = syscall.Exec(real, args, os.Environ())
	fmt.Fprintf(stderr, "ferry: %s: exec %s: %v\n", name, real, err)
	return 126
}

// hasConfigFlag reports a -F among the options (before the destination).
func hasConfigFlag(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if len(a) > 1 && a[0] == '-' && a[1] != '-' && strings.ContainsRune(a[1:], 'F') {
			// -F, -Ffile, or a cluster like -vF. Option values that
			// happen to contain F (-o ForwardAgent=no) are separate
			// arguments and do not start with '-'.
			return true
		}
	}
	return false
}

// findReal finds name on PATH, skipping every entry that is this shim.
func findReal(name string) (string, error) {
	self, _ := os.Executable()
	if s, err := filepath.EvalSymlinks(self); err == nil {
		self = s
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			continue
		}
		if r, err := filepath.EvalSymlinks(p); err == nil && r == self {
			continue
		}
		return p, nil
	}
	return "", fmt.Errorf("not found on PATH (ferry's shim passes the job's ssh config to the real one)")
}
