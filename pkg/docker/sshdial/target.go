// Package sshdial holds one SSH connection to a remote Docker engine and
// opens connections to that engine through it the way the docker CLI's
// ssh:// transport does: each connection is an SSH session running
// `docker system dial-stdio` on the remote host. Many sessions share the one
// connection (SSH multiplexes them), so a job pays for the handshake once
// instead of once per docker command.
//
// Errors are classified (Cause) so that ferry can name the variable to fix
// and the true cause, including the ones the docker CLI hides behind "Is the
// docker daemon running?".
package sshdial

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Target is where to connect: ssh://user@host[:port][/path/to/docker.sock].
type Target struct {
	User string
	Host string
	Port int
	// Path is the remote daemon socket when the URL names one (the docker
	// CLI then runs `docker --host unix://<path> system dial-stdio`).
	Path string
}

// ParseURL reads a DOCKER_HOST-style ssh:// URL. The user is required: the
// docker CLI would fall back to ssh's own configuration, which ferry does
// not read for job variables.
func ParseURL(s string) (Target, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return Target{}, fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "ssh" {
		return Target{}, fmt.Errorf("scheme %q is not ssh", u.Scheme)
	}
	if u.User == nil || u.User.Username() == "" {
		return Target{}, fmt.Errorf("no user (want ssh://user@host[:port])")
	}
	if _, set := u.User.Password(); set {
		return Target{}, fmt.Errorf("a password in the URL is not supported (use SSH_PRIVATE_KEY)")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Target{}, fmt.Errorf("query and fragment are not supported")
	}
	t := Target{User: u.User.Username(), Host: u.Hostname(), Port: 22}
	if t.Host == "" {
		return Target{}, fmt.Errorf("no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Target{}, fmt.Errorf("bad port %q", p)
		}
		t.Port = n
	}
	if u.Path != "" && u.Path != "/" {
		if !safePath(u.Path) {
			return Target{}, fmt.Errorf("socket path %q: only letters, digits and / . _ - are allowed", u.Path)
		}
		t.Path = u.Path
	}
	return t, nil
}

// safePath keeps the remote command free of shell syntax: the path is put
// on the remote command line as is.
func safePath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r)) {
			return false
		}
	}
	return true
}

// Addr is host:port for net.Dial.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// String is the URL ferry prints: ssh://user@host:port[/path].
func (t Target) String() string {
	return "ssh://" + t.User + "@" + t.Addr() + t.Path
}

// remoteCommand is what the docker CLI runs on the remote host.
func (t Target) remoteCommand() string {
	if t.Path != "" {
		return "docker --host unix://" + t.Path + " system dial-stdio"
	}
	return "docker system dial-stdio"
}
