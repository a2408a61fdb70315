package holder

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/docker/enginelock"
	"gitlab.com/ferry-ci/ferry/pkg/docker/jobsocket"
)

// Why the deploy lock looks at the client's command line: compose and
// `docker stack deploy` plan from what they read first (which networks,
// containers and services exist) and act on the plan. A deploy that waited
// at its first change would act on a plan made before the other job's
// deploy: "network with name web_default already exists", a container
// name in use, a stop of a container the other job removed. So a deploy
// command (`docker-compose up|down|...`, `docker compose ...`, `docker
// stack deploy|rm`) takes its target's lock at its first request after
// the handshake (_ping, version, info), before it reads anything. The
// first request that changes a compose project or stack still takes that
// target's lock (the name the command line gives can differ from the
// labels: a `name:` the holder did not find).

// peer is the client process of one connection to the job's socket.
type peer struct {
	pid     int
	once    sync.Once
	targets []enginelock.Target // what its command line deploys; nil: not a deploy
}

type peerKey struct{}

// peerContext is the servers' ConnContext: the connection's peer process
// (jobsocket has checked it belongs to the job).
func peerContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cred == nil || cred.Pid <= 0 {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, &peer{pid: int(cred.Pid)})
}

// commandTargets is what the peer of r deploys, per its command line.
// root is the only tree the holder reads the job's files in (.env, the
// compose file's name:): the job's project dir.
func commandTargets(r *http.Request, root string) []enginelock.Target {
	p, _ := r.Context().Value(peerKey{}).(*peer)
	if p == nil {
		return nil
	}
	p.once.Do(func() {
		dir := "/proc/" + strconv.Itoa(p.pid)
		b, err := os.ReadFile(dir + "/cmdline")
		if err != nil {
			return
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		// Read once, and only for a command that needs a variable.
		environ := sync.OnceValue(func() []byte { e, _ := os.ReadFile(dir + "/environ"); return e })
		env := func(k string) string {
			v, _ := jobsocket.LookupEnviron(environ(), k)
			return v
		}
		cwd, _ := os.Readlink(dir + "/cwd")
		p.targets = DeployTargets(argv, env, cwd, root)
	})
	return p.targets
}

// handshake requests never wait: the clients' version negotiation has its
// own short timeout (the docker CLI's ping: 2.5 s).
func handshake(r *http.Request) bool {
	switch reVersion.ReplaceAllString(r.URL.Path, "") {
	case "/_ping", "/version", "/info":
		return true
	}
	return false
}

var (
	// Subcommands of compose (v1 and v2) that change the project.
	composeDeploys = map[string]bool{"up": true, "down": true, "create": true, "start": true, "stop": true, "restart": true,
		"rm": true, "kill": true, "pause": true, "unpause": true, "run": true, "scale": true, "watch": true}
	// compose's global options that take a value.
	composeValued = map[string]bool{"-f": true, "--file": true, "-p": true, "--project-name": true, "--profile": true,
		"-c": true, "--context": true, "-H": true, "--host": true, "--project-directory": true, "--env-file": true,
		"--log-level": true, "--ansi": true, "--tlscacert": true, "--tlscert": true, "--tlskey": true, "--progress": true,
		"--parallel": true}
	// `docker stack deploy|rm` options that take a value.
	stackValued = map[string]bool{"-c": true, "--compose-file": true, "--resolve-image": true, "--orchestrator": true,
		"--kubeconfig": true, "--namespace": true}
	reComposeName = regexp.MustCompile(`^name:\s*["']?([^"'\s#]+)`)
	reInvalidName = regexp.MustCompile(`[^-_a-z0-9]`)
)

// DeployTargets reads a command line: the compose project a compose
// deploy command changes, or the stacks of `docker stack deploy|rm`.
// env reads the process's environment; cwd is its working directory.
//
// Files (.env, the compose file) are read only beneath root, the job's
// project dir, never through a symlink: the holder runs with the runner
// user's rights, outside the job's sandbox, and a path on the command line
// is the job's choice. Elsewhere compose's other sources decide.
func DeployTargets(argv []string, env func(string) string, cwd, root string) []enginelock.Target {
	for i, a := range argv {
		base := filepath.Base(a)
		switch {
		case base == "docker-compose" && i+1 < len(argv) && argv[i+1] == "compose":
			return composeTarget(argv[i+2:], env, cwd, root) // the v2 plugin
		case base == "docker-compose":
			return composeTarget(argv[i+1:], env, cwd, root) // v1
		case base == "docker":
			return dockerTargets(argv[i+1:], env, cwd, root)
		}
	}
	return nil
}

func dockerTargets(args []string, env func(string) string, cwd, root string) []enginelock.Target {
	// Skip the docker CLI's global options to its command.
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			switch a {
			case "compose":
				return composeTarget(args[i+1:], env, cwd, root)
			case "stack":
				return stackTargets(args[i+1:])
			}
			return nil
		}
		if !strings.Contains(a, "=") && (a == "-H" || a == "--host" || a == "-c" || a == "--context" || a == "--config" || a == "-l" || a == "--log-level" || strings.HasPrefix(a, "--tls") && a != "--tls" && a != "--tlsverify") {
			i++
		}
	}
	return nil
}

func stackTargets(args []string) []enginelock.Target {
	if len(args) == 0 {
		return nil
	}
	switch args[0] {
	case "deploy", "up", "rm", "remove", "down":
	default:
		return nil
	}
	var names []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if stackValued[a] {
				i++
			}
			continue
		}
		names = append(names, a)
	}
	if args[0] == "deploy" || args[0] == "up" {
		if len(names) == 0 {
			return nil
		}
		names = names[len(names)-1:]
	}
	var out []enginelock.Target
	for _, n := range names {
		out = append(out, enginelock.Target{Kind: "stack", Name: n})
	}
	return out
}

// composeTarget follows compose's own order: -p, COMPOSE_PROJECT_NAME (the
// environment, then the project directory's .env), the compose file's
// top-level name:, the project directory's name.
func composeTarget(args []string, env func(string) string, cwd, root string) []enginelock.Target {
	var name, projectDir string
	var files []string
	sub := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			sub = a
			break
		}
		k, v, hasV := strings.Cut(a, "=")
		if !hasV && composeValued[k] && i+1 < len(args) {
			i++
			v = args[i]
		}
		switch k {
		case "-p", "--project-name":
			name = v
		case "-f", "--file":
			files = append(files, v)
		case "--project-directory":
			projectDir = v
		}
	}
	if !composeDeploys[sub] {
		return nil
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(cwd, p)
	}
	if projectDir == "" && len(files) > 0 && files[0] != "-" {
		projectDir = filepath.Dir(abs(files[0]))
	}
	if projectDir == "" {
		projectDir = cwd
	}
	projectDir = abs(projectDir)
	if name == "" {
		name = env("COMPOSE_PROJECT_NAME")
	}
	if name == "" {
		name = scanFile(root, filepath.Join(projectDir, ".env"), func(l string) string {
			v, ok := strings.CutPrefix(l, "COMPOSE_PROJECT_NAME=")
			if !ok {
				return ""
			}
			return strings.Trim(v, `"'`)
		})
	}
	if name == "" {
		if len(files) == 0 {
			for _, f := range []string{"compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"} {
				if scanFile(root, filepath.Join(projectDir, f), func(string) string { return "y" }) != "" {
					files = []string{f}
					break
				}
			}
		}
		if len(files) > 0 && files[0] != "-" {
			f := files[0]
			if !filepath.IsAbs(f) {
				f = filepath.Join(cwd, f)
				if projectDir != cwd {
					f = filepath.Join(projectDir, files[0])
				}
			}
			name = scanFile(root, f, func(l string) string {
				if m := reComposeName.FindStringSubmatch(l); m != nil {
					return m[1]
				}
				return ""
			})
		}
	}
	if name == "" {
		name = filepath.Base(projectDir)
	}
	name = reInvalidName.ReplaceAllString(strings.ToLower(name), "")
	if name == "" || strings.Contains(name, "$") {
		return nil
	}
	return []enginelock.Target{{Kind: "compose project", Name: name}}
}

// scanFile returns the first non-empty pick of a line of a small regular
// file beneath root (openat2: no symlink, no "..", no magic link).
func scanFile(root, path string, pick func(string) string) string {
	if root == "" || !filepath.IsAbs(root) {
		return ""
	}
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return ""
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return ""
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		if v := pick(strings.TrimSpace(sc.Text())); v != "" {
			return v
		}
	}
	return ""
}
