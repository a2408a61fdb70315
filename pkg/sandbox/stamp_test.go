package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stampFixture is a policy over a dir of its own: a hidden tree with the
// job's dir inside (walked to), a writable dir and a read-only one.
type stampFixture struct {
	root, hidden, own, other, rw, ro string
	p                                Policy
}

func newStampFixture(t *testing.T) *stampFixture {
	t.Helper()
	// The build walks every directory on the way to a hidden path, and
	// an entry made in any of them makes the stamp out of date, rightly:
	// /tmp, where every test and build of the machine makes its files, is
	// no place for a fixture that must stay current. /var/cache is quiet.
	root, err := os.MkdirTemp("/var/cache", "ferry-stamp-")
	if err != nil {
		root = t.TempDir()
	} else {
		t.Cleanup(func() { os.RemoveAll(root) })
	}
	f := &stampFixture{root: root,
		hidden: filepath.Join(root, "state"),
		own:    filepath.Join(root, "state", "jobs", "mine"),
		other:  filepath.Join(root, "state", "jobs", "other"),
		rw:     filepath.Join(root, "builds", "proj"),
		ro:     filepath.Join(root, "payload"),
	}
	for _, d := range []string{f.own, f.other, f.rw, f.ro} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f.p = Policy{Hide: []string{f.hidden, filepath.Join(root, "missing-secret")}, ReadOnly: []string{f.own, f.ro, filepath.Join(f.ro, "deep", "file")},
		ReadWrite: []string{f.rw}, Devices: []string{"/dev"}}
	return f
}

// stamped builds f's policy with a stamp and returns the stamp after an
// encode/decode round trip, as a stage reads it.
func stamped(t *testing.T, p Policy) *Stamp {
	t.Helper()
	r, s, err := p.BuildStamped()
	if err != nil {
		t.Fatal(err)
	}
	// Kept open as the holder keeps it: its rules hold their inodes, whose
	// numbers no new file can take meanwhile.
	t.Cleanup(func() { r.Close() })
	text, err := s.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var back Stamp
	if err := back.UnmarshalText(text); err != nil {
		t.Fatalf("decode: %v\n%s", err, text)
	}
	return &back
}

func TestStampCurrent(t *testing.T) {
	needLandlock(t)
	// Each change would make a build differ from the held ruleset; each
	// must make the stamp out of date.
	changes := map[string]func(t *testing.T, f *stampFixture){
		"writable dir made again": func(t *testing.T, f *stampFixture) {
			must(t, os.RemoveAll(f.rw))
			must(t, os.Mkdir(f.rw, 0o700))
		},
		"read-only dir removed": func(t *testing.T, f *stampFixture) { must(t, os.RemoveAll(f.ro)) },
		"hidden path that was missing made": func(t *testing.T, f *stampFixture) {
			must(t, os.WriteFile(filepath.Join(f.root, "missing-secret"), []byte("x"), 0o600))
		},
		"read-only path that was missing made, two levels down": func(t *testing.T, f *stampFixture) {
			must(t, os.Mkdir(filepath.Join(f.ro, "deep"), 0o700))
			must(t, os.WriteFile(filepath.Join(f.ro, "deep", "file"), []byte("x"), 0o600))
		},
		"entry added beside a hidden path": func(t *testing.T, f *stampFixture) {
			must(t, os.Mkdir(filepath.Join(f.root, "new-sibling"), 0o700))
		},
		"hidden path became a symlink elsewhere": func(t *testing.T, f *stampFixture) {
			must(t, os.Rename(f.hidden, f.hidden+".old"))
			must(t, os.Symlink(f.hidden+".old", f.hidden))
		},
		"policy changed": func(t *testing.T, f *stampFixture) { f.p.ReadWrite = append(f.p.ReadWrite, f.other) },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			f := newStampFixture(t)
			s := stamped(t, f.p)
			if ok, _, _ := s.Current(f.p); !ok {
				t.Fatalf("a stamp is out of date right after its build:\n%q", s.key)
			}
			time.Sleep(10 * time.Millisecond) // ctimes of a coarse clock
			change(t, f)
			if ok, _, _ := s.Current(f.p); ok {
				t.Fatalf("%s: the stamp still says current", name)
			}
		})
	}
	// What a job does all day changes nothing the ruleset rests on.
	t.Run("job writes in its dirs", func(t *testing.T) {
		f := newStampFixture(t)
		s := stamped(t, f.p)
		time.Sleep(10 * time.Millisecond)
		must(t, os.WriteFile(filepath.Join(f.rw, "out.txt"), []byte("x"), 0o600))
		must(t, os.MkdirAll(filepath.Join(f.rw, "a", "b"), 0o700))
		must(t, os.Chmod(f.rw, 0o755))
		must(t, os.WriteFile(filepath.Join(f.own, "state.json"), []byte("{}"), 0o600))
		if ok, _, _ := s.Current(f.p); !ok {
			t.Fatal("writes inside the job's own dirs made the stamp out of date")
		}
	})
}

// TestAdoptedRulesetRestricts: a ruleset adopted from a descriptor (as a
// stage takes the holder's) confines like the one built, and Adopt refuses
// a descriptor that is no ruleset.
func TestAdoptedRulesetRestricts(t *testing.T) {
	abi := needLandlock(t)
	f := newStampFixture(t)
	must(t, os.WriteFile(filepath.Join(f.other, "secret"), []byte("OTHER-JOB-SECRET\n"), 0o600))
	r, s, err := f.p.BuildStamped()
	if err != nil {
		t.Fatal(err)
	}
	ok, _, kinds := s.Current(f.p)
	if !ok {
		t.Fatal("not current")
	}
	adopted, err := Adopt(r.FD(), abi, kinds)
	if err != nil {
		t.Fatal(err)
	}
	defer adopted.Close()
	out, code := run(t, adopted, "cat "+filepath.Join(f.other, "secret")+"; echo ok > "+filepath.Join(f.rw, "w")+" && cat "+filepath.Join(f.rw, "w"))
	if strings.Contains(out, "OTHER-JOB-SECRET") || !strings.Contains(out, "ok") || code != 0 {
		t.Fatalf("adopted ruleset: exit %d, output %q: want the hidden file refused and the writable dir written", code, out)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Adopt(int(devnull.Fd()), abi, Lookups{}); err == nil {
		t.Fatal("Adopt took /dev/null for a Landlock ruleset")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
