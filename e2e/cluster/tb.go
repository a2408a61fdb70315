package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// tb is the ktesting.TB that StartTestServer wants. A cluster outlives any
// single test (one per test package, or the devcluster command, where there
// is no *testing.T at all), so it carries its own cleanups and turns Fatal
// into an error returned by run.
type tb struct {
	logf     func(string, ...any)
	dir      string
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	tmp      int
}

type fatal struct{ msg string }

func newTB(logf func(string, ...any), dir string) *tb {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &tb{logf: logf, dir: dir}
}

// run calls f and converts a Fatal inside it into an error.
func (t *tb) run(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if fe, ok := r.(fatal); ok {
				err = fmt.Errorf("%s", fe.msg)
				return
			}
			panic(r)
		}
	}()
	f()
	return nil
}

// cleanup runs registered cleanups, last first, like testing.T.
func (t *tb) cleanup() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (t *tb) Attr(key, value string)         {}
func (t *tb) Chdir(dir string)               { _ = os.Chdir(dir) }
func (t *tb) Cleanup(f func())               { t.mu.Lock(); t.cleanups = append(t.cleanups, f); t.mu.Unlock() }
func (t *tb) Error(args ...any)              { t.markFailed(); t.logf("%s", fmt.Sprint(args...)) }
func (t *tb) Errorf(format string, a ...any) { t.markFailed(); t.logf(format, a...) }
func (t *tb) Fail()                          { t.markFailed() }
func (t *tb) FailNow()                       { t.markFailed(); panic(fatal{"FailNow"}) }
func (t *tb) Failed() bool                   { t.mu.Lock(); defer t.mu.Unlock(); return t.failed }
func (t *tb) Fatal(args ...any)              { t.markFailed(); panic(fatal{fmt.Sprint(args...)}) }
func (t *tb) Fatalf(format string, a ...any) { t.markFailed(); panic(fatal{fmt.Sprintf(format, a...)}) }
func (t *tb) Helper()                        {}
func (t *tb) Log(args ...any)                { t.logf("%s", fmt.Sprint(args...)) }
func (t *tb) Logf(format string, a ...any)   { t.logf(format, a...) }
func (t *tb) Name() string                   { return "ferry-e2e-cluster" }
func (t *tb) Setenv(key, value string)       { _ = os.Setenv(key, value) }
func (t *tb) Skip(args ...any)               { panic(fatal{"skip: " + fmt.Sprint(args...)}) }
func (t *tb) Skipf(format string, a ...any)  { panic(fatal{"skip: " + fmt.Sprintf(format, a...)}) }
func (t *tb) SkipNow()                       { panic(fatal{"skip"}) }
func (t *tb) Skipped() bool                  { return false }
func (t *tb) markFailed()                    { t.mu.Lock(); t.failed = true; t.mu.Unlock() }

// TempDir returns a new directory inside the cluster's own directory, so
// Stop removes it with everything else.
func (t *tb) TempDir() string {
	t.mu.Lock()
	t.tmp++
	n := t.tmp
	t.mu.Unlock()
	d := filepath.Join(t.dir, "tmp"+strconv.Itoa(n))
	if err := os.MkdirAll(d, 0o700); err != nil {
		panic(fatal{err.Error()})
	}
	return d
}
