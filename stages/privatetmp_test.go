package stages_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/jobproc"
)

// TestPrivateTmpJobs (issue 19, item 4), as the unprivileged runner user
// through the driver. With a private /tmp, two jobs of different projects
// running at once each write the literal /tmp/x and /var/tmp/v and read
// back their own, neither sees the other's nor a file the host has in
// /tmp, and the host's /tmp/x is not theirs. Without (forced with
// --private-tmp=off), the write is refused, the job goes on, and its log
// says once, after the script's own output, which path was refused and to
// use $TMPDIR.
func TestPrivateTmpJobs(t *testing.T) {
	forEachTmpMode(t, func(t *testing.T, mode string) {
		s := setupIsolation(t, mode)
		planted, err := os.CreateTemp("/tmp", "ferry-host-temp-")
		if err != nil {
			t.Fatal(err)
		}
		planted.WriteString(hostTmpContent + "\n")
		planted.Close()
		os.Chown(planted.Name(), s.uid, s.gid)
		defer os.Remove(planted.Name())
		hostX, _ := os.ReadFile("/tmp/x")

		var logs map[string]string
		s.runHelper(t, "tmp", &logs, "FERRY_ISO_PLANTED="+planted.Name())
		for _, name := range []string{"a", "b"} {
			log := logs[name]
			if logs[name+".status"] != runnerdriver.StatusSuccess {
				t.Errorf("job %s: %s\n%s", name, logs[name+".status"], log)
			}
			if !strings.Contains(log, modeLine(mode)) {
				t.Errorf("job %s's log does not say %q:\n%s", name, modeLine(mode), log)
			}
			// Without a private /tmp the host's /tmp stays readable (only
			// the runner's temp root is hidden): no job can write there.
			if mode != "off" && strings.Contains(log, "PLANTED-VISIBLE") {
				t.Errorf("job %s sees the host's %s", name, planted.Name())
			}
			// ssh refuses an Include'd file owned by neither root nor the
			// user; in the namespace root's files show as nobody's.
			if !strings.Contains(log, "SSH-INCLUDE-OK") {
				t.Errorf("job %s: ssh refused the system's config:\n%s", name, log)
			}
			if !strings.Contains(log, "MKTEMP-OK") {
				t.Errorf("job %s: mktemp failed:\n%s", name, log)
			}
			refused := strings.Count(log, "was refused")
			// auto enters the namespaces prepare's holder made (on
			// x86-64); reexec makes them on every stage, and says so once.
			if slow := strings.Count(log, "through a re-exec of ferry"); (mode == "auto" && runtime.GOARCH == "amd64" && slow != 0) || (mode == "reexec" && slow != 1) {
				t.Errorf("job %s: %d lines about the re-exec in mode %s:\n%s", name, slow, mode, log)
			}
			if mode != "off" {
				for _, want := range []string{"TMP-OWN-OK " + name, "VARTMP-OK " + name} {
					if !strings.Contains(log, want) {
						t.Errorf("job %s: no %q:\n%s", name, want, log)
					}
				}
				if !strings.Contains(log, "PLANTED-HIDDEN") {
					t.Errorf("job %s: the check of the host's file did not run:\n%s", name, log)
				}
				// The escapes: a nested user+mount namespace, a chroot
				// escape, another process's root. None reaches the host's
				// /tmp (docs/threat-model.md, "/tmp and /var/tmp").
				if !strings.Contains(log, "NESTED-USERNS-OK") {
					t.Errorf("job %s: could not make a nested user namespace: the escapes below prove nothing:\n%s", name, log)
				}
				if n := strings.Count(log, "ESCAPE-DENIED "); n != len(tmpEscapes) || strings.Contains(log, "ESCAPE-WORKED") || strings.Contains(log, hostTmpContent) {
					t.Errorf("job %s: %d of %d escapes to the host's /tmp denied:\n%s", name, n, len(tmpEscapes), log)
				}
				if refused != 0 {
					t.Errorf("job %s: a refusal reported with a private /tmp:\n%s", name, log)
				}
				continue
			}
			if strings.Contains(log, "TMP-OWN-OK") || strings.Contains(log, "VARTMP-OK") {
				t.Errorf("job %s wrote /tmp without a private /tmp:\n%s", name, log)
			}
			want := "Sandbox: /tmp/x was refused (and 1 more paths): this host gives jobs no private /tmp, so /tmp and /var/tmp are not writable; use $TMPDIR ("
			if refused != 1 || !strings.Contains(log, want) {
				t.Errorf("job %s: want one line %q, got %d:\n%s", name, want, refused, log)
			}
			if strings.Index(log, "was refused") < strings.Index(log, "SCRIPT-END") {
				t.Errorf("job %s: the line is not at the end of the stage:\n%s", name, log)
			}
		}
		if b, _ := os.ReadFile("/tmp/x"); !bytes.Equal(b, hostX) {
			t.Errorf("the host's /tmp/x changed: %q", b)
		}
	})
}

// hostTmpContent is in the host's /tmp file TestPrivateTmpJobs plants.
const hostTmpContent = "HOST-TMP-CONTENT-3b9e"

// tmpEscapes are a job's ways out of its private /tmp to the host's ($P:
// the host's file, readable to the runner user by its permissions). Each
// must fail: a nested user+mount namespace (a copy of the job's own mount
// tree, entered again with setns or not) and a nested user namespace's
// chroot escape (its top is the job's namespace's root) see the job's
// /tmp; another process's root (ferry's, init's) is refused (by the
// kernel already: tried with the job's Landlock domain taken out). The
// nested namespaces get no uid map (Landlock refuses the job's write of
// /proc/<pid>/uid_map) but every capability in them. Seen failing (the
// first one) with the private /tmp's binds and Landlock both taken out.
var tmpEscapes = [][2]string{
	{"nested-userns-mountns", `unshare -Um cat "$P"`},
	{"nested-setns-own-mountns", `unshare -Um nsenter --mount=/proc/self/ns/mnt cat "$P"`},
	{"chroot-escape", `unshare -U perl -e 'mkdir "esc"; chroot "esc" or die; chdir ".." for 1..64; chroot "." or die; open F, "<", $ARGV[0] or die; print <F>' "$P"`},
	{"proc-ferry-root", `cat "/proc/$PPID/root$P"`},
	{"proc-init-root", `cat "/proc/1/root$P"`},
}

// privateTmpScript is job name's script for TestPrivateTmpJobs.
func privateTmpScript(rv, name, planted string) []string {
	var esc strings.Builder
	fmt.Fprintf(&esc, "P=%s\nunshare -U true 2>/dev/null && echo NESTED-USERNS-OK\n", shellQuote(planted))
	esc.WriteString(`esc() { if out=$( eval "$2" 2>/dev/null ) && [ "${out#*HOST-TMP-}" != "$out" ]; then echo "ESCAPE-WORKED $1"; else echo "ESCAPE-DENIED $1"; fi; }` + "\n")
	for _, e := range tmpEscapes {
		fmt.Fprintf(&esc, "esc %s %s\n", e[0], shellQuote(e[1]))
	}
	return []string{esc.String(), fmt.Sprintf(`RV=%s; NAME=%s
if echo "$NAME" > /tmp/x; then touch "$RV/$NAME.wrote"; fi
echo "$NAME" > /var/tmp/v && [ "$(cat /var/tmp/v)" = "$NAME" ] && echo "VARTMP-OK $NAME"
touch "$RV/$NAME.done"
for i in $(seq 300); do [ -e "$RV/a.done" ] && [ -e "$RV/b.done" ] && break; sleep 0.1; done
[ -e "$RV/a.wrote" ] && [ -e "$RV/b.wrote" ] && [ "$(cat /tmp/x)" = "$NAME" ] && echo "TMP-OWN-OK $NAME"
if [ -e %s ]; then echo PLANTED-VISIBLE; else echo PLANTED-HIDDEN; fi
f=$(mktemp) && echo y > "$f" && rm "$f" && echo MKTEMP-OK
printf 'Include /etc/ssh/ssh_config\n' > "$TMPDIR/sshc" && ssh -F "$TMPDIR/sshc" -G example.org >/dev/null && echo SSH-INCLUDE-OK
echo SCRIPT-END`, rv, name, shellQuote(planted))}
}

// privateTmpRole is the runner's part of TestPrivateTmpJobs.
func privateTmpRole(ctx context.Context, t *testing.T, d *runnerdriver.Driver, rv string) {
	type res struct {
		name string
		r    *runnerdriver.PipelineResult
	}
	done := make(chan res, 2)
	for i, name := range []string{"a", "b"} {
		go func() {
			done <- res{name, d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-" + name + "/tmp", ProjectID: 301 + i,
				Jobs: []runnerdriver.Job{{Name: name, Script: privateTmpScript(rv, name, os.Getenv("FERRY_ISO_PLANTED"))}}})}
		}()
	}
	out := map[string]string{}
	for i := 0; i < 2; i++ {
		r := <-done
		j := r.r.Jobs[r.name]
		out[r.name], out[r.name+".status"] = j.Log, j.Status
	}
	b, _ := json.Marshal(out)
	fmt.Printf("RESULT-JSON %s\n", b)
}

// TestPrivateTmpHolder: the job's private /tmp is made once, at prepare, by
// a holder process every stage enters (pkg/tmpns). As the unprivileged
// runner user through the driver: what the script writes to /tmp/x the
// after_script (another stage, another `ferry run`) reads; the job cannot
// signal its holder, open its namespaces (nsenter, /proc/<pid>/ns) nor
// rewrite its PID file; the holder holds the job's process mark (so
// cleanup and the next prepare's sweep of dead runners' jobs find it) and
// is gone once the job is cleaned up. Other jobs never see the file:
// TestPrivateTmpJobs runs two at once in each mode.
func TestPrivateTmpHolder(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the holder is entered by x86-64 code; elsewhere every stage uses the re-exec (TestPrivateTmpJobs, reexec mode)")
	}
	s := setupIsolation(t, "auto")
	var r struct{ Log, Status string }
	res := s.runHelper(t, "holder", &r)
	if r.Status != runnerdriver.StatusSuccess || !strings.Contains(r.Log, "AFTER-SEES persisted-") {
		t.Errorf("the after_script did not see the script's /tmp/x (%s):\n%s", r.Status, r.Log)
	}
	if strings.Contains(r.Log, "through a re-exec of ferry") {
		t.Errorf("a stage did not enter the holder:\n%s", r.Log)
	}
	for _, bad := range []string{"HOLDER-SIGNALLED", "HOLDER-NS-OPENED", "HOLDER-FD-READ", "NSENTER-WORKED", "PIDFILE-WRITTEN"} {
		if strings.Contains(r.Log, bad) {
			t.Errorf("%s:\n%s", bad, r.Log)
		}
	}
	if !strings.Contains(res, "RUNNER-SEES-MARK-HELD") {
		t.Errorf("the holder does not hold the job's mark (cleanup and the sweep find it by that):\n%s", res)
	}
	var pid int
	if j := strings.Index(r.Log, "HOLDER-PID "); j < 0 {
		t.Fatalf("the job found no holder:\n%s", r.Log)
	} else {
		fmt.Sscanf(r.Log[j:], "HOLDER-PID %d", &pid)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if pid <= 1 || strings.Contains(string(cmdline), "--hold") {
		t.Errorf("holder %d still runs after the job's cleanup: %q", pid, cmdline)
	}
}

// holderRole is the runner's part of TestPrivateTmpHolder.
func holderRole(ctx context.Context, d *runnerdriver.Driver, rv string) {
	script := `J="$FERRY_STATE_DIR/jobs/$FERRY_JOB_KEY"; HF="$J/tmpns/holder.pid"; HP=$(cut -d' ' -f1 "$HF")
echo "HOLDER-PID $HP"
echo "$J" > "` + rv + `/h.state"
for i in $(seq 100); do [ -e "` + rv + `/h.checked" ] && break; sleep 0.1; done
echo "persisted-$CI_JOB_ID" > /tmp/x
if kill -0 "$HP" 2>/dev/null; then echo HOLDER-SIGNALLED; fi
if kill -TERM "$HP" 2>/dev/null; then echo HOLDER-SIGNALLED; fi
if readlink "/proc/$HP/ns/mnt" >/dev/null 2>&1; then echo HOLDER-NS-OPENED; fi
for f in /proc/$HP/fd/*; do if readlink "$f" >/dev/null 2>&1; then echo HOLDER-FD-READ; fi; done
if nsenter -t "$HP" -U -m true 2>/dev/null; then echo NSENTER-WORKED; fi
if echo "$$ 1" > "$HF" 2>/dev/null; then echo PIDFILE-WRITTEN; fi`
	after := `echo "AFTER-SEES $(cat /tmp/x)"`
	// The runner side (this process, the runner user, unsandboxed)
	// checks while the job runs that the holder holds the job's mark.
	check := make(chan struct{})
	go func() {
		defer close(check)
		defer os.WriteFile(filepath.Join(rv, "h.checked"), nil, 0o600)
		for i := 0; i < 600 && ctx.Err() == nil; i++ {
			time.Sleep(50 * time.Millisecond)
			b, err := os.ReadFile(filepath.Join(rv, "h.state"))
			if err != nil || len(b) == 0 {
				continue
			}
			dir := strings.TrimSpace(string(b))
			pid, ok := jobproc.ReadPIDFile(filepath.Join(dir, "tmpns", "holder.pid"))
			if !ok {
				fmt.Println("RUNNER-SEES-NO-HOLDER")
				return
			}
			for _, h := range jobproc.Holders(filepath.Join(dir, jobproc.MarkFile)) {
				if h == pid {
					fmt.Println("RUNNER-SEES-MARK-HELD")
					return
				}
			}
			fmt.Println("RUNNER-SEES-MARK-NOT-HELD")
			return
		}
	}()
	r := d.RunPipeline(ctx, runnerdriver.Pipeline{ProjectPath: "team-h/tmp", ProjectID: 401,
		Jobs: []runnerdriver.Job{{Name: "h", Script: []string{script}, AfterScript: []string{after}}}})
	<-check
	j := r.Jobs["h"]
	b, _ := json.Marshal(struct{ Log, Status string }{j.Log, j.Status})
	fmt.Printf("RESULT-JSON %s\n", b)
}
