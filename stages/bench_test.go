package stages_test

import (
	"os/exec"
	"testing"
)

// BenchmarkRunStage measures one `ferry run` of a trivial stage script: the
// per-stage cost a job pays for ferry (process start, state read, redactor,
// GITLAB_ENV check, process-group bookkeeping) on top of bash.
func BenchmarkRunStage(b *testing.B) {
	j := newJob(b, "900")
	prep := j.cmd("prepare")
	if out, err := prep.CombinedOutput(); err != nil {
		b.Fatalf("prepare: %v %s", err, out)
	}
	script := benchScript(b, j)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := j.cmd("run", script, "build_script")
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("run: %v %s", err, out)
		}
	}
	b.StopTimer()
	j.cmd("cleanup").Run()
}

// BenchmarkBashDirect runs the same script with bash alone: the floor.
func BenchmarkBashDirect(b *testing.B) {
	j := newJob(b, "901")
	script := benchScript(b, j)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := exec.Command("bash", script)
		c.Env = j.environ()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("bash: %v %s", err, out)
		}
	}
}

func benchScript(b *testing.B, j *fakeJob) string {
	b.Helper()
	return j.script("echo \"$CI_JOB_ID hello\"\ntrue")
}

// BenchmarkFerryStart is `ferry version`: the cost of starting the binary
// at all (loading it and running every package's init), which every stage
// pays before ferry does any work.
func BenchmarkFerryStart(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(ferryBin, "version").CombinedOutput(); err != nil {
			b.Fatalf("version: %v %s", err, out)
		}
	}
}
