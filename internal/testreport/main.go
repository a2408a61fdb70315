// Command testreport runs `go test -json ...` (its arguments are the command)
// and prints what a plain `go test` prints — every package's closing line
// ("ok", "FAIL", "?"), the whole output of every failing test, build errors,
// anything printed outside a test — followed by one line counting the tests
// that skipped, and one line per skipped test with the reason it gave. It
// exits with the command's exit status, so nothing it summarizes can turn a
// failure into a pass: a skip that hides a missing tool (sshd, dockerd, the
// compose plugin) is visible at the end of `make test` instead of silent.
//
//	testreport [-label name] go test -json ./...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output, build-fail
	Test       string
	Output     string
}

type skip struct{ pkg, test, reason string }

// report turns the event stream into go test's plain output on w and
// collects the skips.
type report struct {
	w       io.Writer
	pending map[string][]string // package + "\x00" + test -> its output so far
	skips   []skip
	fails   int
}

func key(pkg, test string) string { return pkg + "\x00" + test }

func (r *report) event(e event) {
	switch {
	case e.Action == "build-output":
		fmt.Fprint(r.w, e.Output)
	case e.Test == "" && e.Action == "output" && e.Output == "PASS\n":
		// -json runs the tests verbosely; plain go test prints only "ok".
	case e.Test == "" && e.Action == "output":
		// The package's own lines: "ok ...", "FAIL ...", a TestMain's
		// prints, a panic (a timeout's names the tests still running:
		// their output goes first, as plain go test has printed it).
		if strings.HasPrefix(e.Output, "panic: ") || strings.HasPrefix(e.Output, "FAIL") {
			r.flush(e.Package)
		}
		fmt.Fprint(r.w, e.Output)
	case e.Test == "" && e.Action == "fail":
		// A package that failed (a timeout's panic, a crash): tests it
		// never finished have output nobody has seen yet.
		r.flush(e.Package)
	case e.Test == "":
	case e.Action == "output":
		k := key(e.Package, e.Test)
		r.pending[k] = append(r.pending[k], e.Output)
	case e.Action == "fail":
		r.fails++
		k := key(e.Package, e.Test)
		for _, l := range r.pending[k] {
			if !strings.HasPrefix(strings.TrimSpace(l), "=== ") {
				fmt.Fprint(r.w, l)
			}
		}
		delete(r.pending, k)
	case e.Action == "skip":
		k := key(e.Package, e.Test)
		r.skips = append(r.skips, skip{e.Package, e.Test, reason(r.pending[k])})
		delete(r.pending, k)
	case e.Action == "pass":
		delete(r.pending, key(e.Package, e.Test))
	}
}

// flush prints the output of pkg's unfinished tests.
func (r *report) flush(pkg string) {
	var ks []string
	for k := range r.pending {
		if strings.HasPrefix(k, pkg+"\x00") {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	for _, k := range ks {
		for _, l := range r.pending[k] {
			fmt.Fprint(r.w, l)
		}
		delete(r.pending, k)
	}
}

// reason is the last line a skipped test logged before "--- SKIP" (what it
// passed to t.Skip), without the file:line prefix.
func reason(lines []string) string {
	why := ""
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		if i := strings.Index(t, ": "); i > 0 && strings.Contains(t[:i], ".go:") {
			t = t[i+2:]
		}
		why = t
	}
	if why == "" {
		return "no reason given"
	}
	return why
}

// summary is the closing line and one line per skipped test.
func (r *report) summary(label string) {
	switch len(r.skips) {
	case 0:
		fmt.Fprintf(r.w, "%sno test skipped\n", label)
		return
	case 1:
		fmt.Fprintf(r.w, "%s1 test skipped:\n", label)
	default:
		fmt.Fprintf(r.w, "%s%d tests skipped:\n", label, len(r.skips))
	}
	for _, s := range r.skips {
		fmt.Fprintf(r.w, "    SKIP %s %s: %s\n", s.pkg, s.test, s.reason)
	}
}

func main() {
	label := flag.String("label", "", "a name for the summary line (e.g. the module)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: testreport [-label name] go test -json [flags] [packages]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	pfx := ""
	if *label != "" {
		pfx = *label + ": "
	}
	os.Exit(run(flag.Args(), pfx, os.Stdout))
}

// run runs the command and returns its exit status (1 when it could not
// be started).
func run(argv []string, label string, w io.Writer) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
		return 1
	}
	r := &report{w: w, pending: map[string][]string{}}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Action == "" {
			// Not an event (go test -json writes some errors as text):
			// pass it on as it is.
			fmt.Fprintln(w, sc.Text())
			continue
		}
		r.event(e)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "testreport: reading go test's output: %v\n", err)
		io.Copy(w, out) // keep draining so the command can finish
	}
	err = cmd.Wait()
	for _, p := range packagesPending(r) {
		r.flush(p)
	}
	r.summary(label)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "testreport: %s: %v\n", strings.Join(argv, " "), err)
		return 1
	}
}

func packagesPending(r *report) []string {
	seen := map[string]bool{}
	var ps []string
	for k := range r.pending {
		p, _, _ := strings.Cut(k, "\x00")
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	sort.Strings(ps)
	return ps
}
