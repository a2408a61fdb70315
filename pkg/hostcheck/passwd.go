package hostcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// account is one passwd entry.
type account struct {
	Username, Uid, Gid, HomeDir string
}

// lookupAccount finds a user by name or uid with `getent passwd`, which asks
// the host's name services (LDAP, sssd) as gitlab-runner's own lookups do,
// and falls back to /etc/passwd. Not os/user: with cgo available it makes
// ferry a dynamically linked program, and the runner starts ferry for every
// stage (the dynamic loader alone costs more than a stage's work).
func lookupAccount(key string) (account, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getent", "passwd", key).Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		if a, ok := parsePasswd(out, key); ok {
			return a, nil
		}
	case errors.As(err, &ee) && ee.ExitCode() == 2: // getent: not found
		return account{}, fmt.Errorf("unknown user %s", key)
	}
	b, rerr := os.ReadFile("/etc/passwd")
	if rerr != nil {
		return account{}, fmt.Errorf("looking up user %s: %w", key, rerr)
	}
	if a, ok := parsePasswd(b, key); ok {
		return a, nil
	}
	return account{}, fmt.Errorf("unknown user %s", key)
}

func currentAccount() (account, error) { return lookupAccount(strconv.Itoa(os.Getuid())) }

// parsePasswd returns the entry whose name or uid is key.
func parsePasswd(b []byte, key string) (account, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 7 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == key || f[2] == key {
			return account{Username: f[0], Uid: f[2], Gid: f[3], HomeDir: f[5]}, true
		}
	}
	return account{}, false
}
