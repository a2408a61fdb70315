package jobhome

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

func newHome(t *testing.T) (runner, root, home string) {
	runner, root = t.TempDir(), t.TempDir()
	home = Dir(root, "https://gitlab.example", 101)
	if err := Ensure(root, home); err != nil {
		t.Fatal(err)
	}
	return runner, root, home
}

// A project's home is keyed on instance and project, lives under
// <root>/homes, and gets its XDG dirs.
func TestDirAndEnsure(t *testing.T) {
	_, root, home := newHome(t)
	if want := filepath.Join(root, "homes"); filepath.Dir(home) != want || !strings.HasSuffix(home, "-101") {
		t.Errorf("home %s: want <root>/homes/<hash>-101", home)
	}
	if Dir(root, "https://other.example", 101) == home || Dir(root, "https://gitlab.example", 102) == home {
		t.Error("two instances or two projects share a home")
	}
	for _, x := range XDG {
		if fi, err := os.Stat(filepath.Join(home, x.Rel)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", x.Rel, err)
		}
	}
	// A job that chmods its home does not lock its project out.
	os.Chmod(home, 0o755)
	if err := Ensure(root, home); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(home); fi.Mode().Perm() != 0o700 {
		t.Errorf("home mode %v", fi.Mode())
	}
	// homes/ itself replaced by a symlink: refused.
	other := t.TempDir()
	os.RemoveAll(filepath.Join(root, "homes"))
	os.Symlink(other, filepath.Join(root, "homes"))
	if err := Ensure(root, home); err == nil {
		t.Error("a symlinked homes/ was accepted")
	}
}

// Seeding: copied when new; an unedited copy follows the admin's file,
// an edited one is the project's; a file no longer seeded is removed if
// unedited; skipped paths never reach the home.
func TestSync(t *testing.T) {
	runner, _, home := newHome(t)
	write(t, filepath.Join(runner, ".gitconfig"), "admin v1\n")
	write(t, filepath.Join(runner, ".ssh/config"), "Host a\n")
	write(t, filepath.Join(runner, ".ssh/id_ed25519"), "KEY\n")
	write(t, filepath.Join(runner, ".config/tool/a.conf"), "a\n")
	write(t, filepath.Join(runner, ".config/tool/token"), "SECRET\n")
	plan := SeedPlan{From: runner, Entries: []string{".gitconfig", ".ssh/config", ".config/tool", ".missing"},
		Skip: func(rel string) bool { return rel == ".config/tool/token" || strings.HasPrefix(rel, ".ssh/id_") }}
	var rec Record
	res, err := Sync(home, &rec, plan)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(res.Copied)
	if got := strings.Join(res.Copied, ","); got != ".config/tool/a.conf,.gitconfig,.ssh/config" {
		t.Errorf("copied %s", got)
	}
	if _, err := os.Stat(filepath.Join(home, ".config/tool/token")); err == nil {
		t.Error("a skipped file was copied")
	}

	// The project edits .gitconfig; the admin changes both files.
	write(t, filepath.Join(home, ".gitconfig"), "project's own\n")
	write(t, filepath.Join(runner, ".gitconfig"), "admin v2\n")
	write(t, filepath.Join(runner, ".ssh/config"), "Host a\nHost b\n")
	res, err = Sync(home, &rec, plan)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Updated, ",") != ".ssh/config" || strings.Join(res.Kept, ",") != ".gitconfig" {
		t.Errorf("updated %v kept %v", res.Updated, res.Kept)
	}
	if read(t, filepath.Join(home, ".gitconfig")) != "project's own\n" || read(t, filepath.Join(home, ".ssh/config")) != "Host a\nHost b\n" {
		t.Error("wrong contents after the admin's change")
	}
	// Nothing changed: nothing done, nothing reported.
	if res, _ = Sync(home, &rec, plan); len(res.Copied)+len(res.Updated)+len(res.Kept)+len(res.Removed) != 0 {
		t.Errorf("second sync did %+v", res)
	}
	// The admin drops an entry: the unedited copy goes, the edited stays.
	plan.Entries = []string{".gitconfig"}
	res, _ = Sync(home, &rec, plan)
	sort.Strings(res.Removed)
	if strings.Join(res.Removed, ",") != ".config/tool/a.conf,.ssh/config" {
		t.Errorf("removed %v", res.Removed)
	}
	if _, err := os.Stat(filepath.Join(home, ".ssh/config")); err == nil {
		t.Error(".ssh/config still there")
	}
	// A project that deletes its copy gets the admin's version again.
	plan.Entries = []string{".gitconfig", ".ssh/config"}
	os.Remove(filepath.Join(home, ".gitconfig"))
	res, _ = Sync(home, &rec, plan)
	if read(t, filepath.Join(home, ".gitconfig")) != "admin v2\n" || len(res.Copied) != 2 {
		t.Errorf("after the project deleted its copy: %q, copied %v", read(t, filepath.Join(home, ".gitconfig")), res.Copied)
	}
	write(t, filepath.Join(home, ".gitconfig"), "project's own\n")
	plan.Entries = nil
	Sync(home, &rec, plan)
	if read(t, filepath.Join(home, ".gitconfig")) != "project's own\n" {
		t.Error("the project's edited file was removed")
	}
}

// A job that replaced a directory of its home with a symlink to a file of
// the runner user cannot make ferry write through it.
func TestSyncDoesNotFollowSymlinks(t *testing.T) {
	runner, _, home := newHome(t)
	victim := t.TempDir()
	write(t, filepath.Join(victim, "config"), "victim\n")
	write(t, filepath.Join(runner, ".ssh/config"), "admin\n")
	os.RemoveAll(filepath.Join(home, ".ssh"))
	if err := os.Symlink(victim, filepath.Join(home, ".ssh")); err != nil {
		t.Fatal(err)
	}
	var rec Record
	res, _ := Sync(home, &rec, SeedPlan{From: runner, Entries: []string{".ssh/config"}})
	if len(res.Copied) != 0 {
		t.Errorf("copied %v through a symlinked dir", res.Copied)
	}
	if read(t, filepath.Join(victim, "config")) != "victim\n" {
		t.Fatal("ferry wrote through the job's symlink")
	}
	// The same with nothing there yet: ferry must not create a file in
	// the directory the link points to (another project's home, say).
	os.Remove(filepath.Join(victim, "config"))
	rec = Record{}
	Sync(home, &rec, SeedPlan{From: runner, Entries: []string{".ssh/config"}})
	if _, err := os.Lstat(filepath.Join(victim, "config")); err == nil {
		t.Fatal("ferry created a file through the job's symlinked dir")
	}
	write(t, filepath.Join(victim, "config"), "victim\n")
	// A symlinked file: replaced (rename), its target untouched.
	os.Remove(filepath.Join(home, ".ssh"))
	os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
	os.Symlink(filepath.Join(victim, "config"), filepath.Join(home, ".ssh", "config"))
	rec = Record{Files: map[string]FileRecord{".ssh/config": {Source: "old", Copy: "x"}}}
	Sync(home, &rec, SeedPlan{From: runner, Entries: []string{".ssh/config"}})
	if read(t, filepath.Join(victim, "config")) != "victim\n" {
		t.Fatal("ferry wrote through the job's symlinked file")
	}
}

// Homes idle longer than the limit (and their last job's timeout + 1h)
// are removed, read-only directories included; others and keep stay.
func TestSweepStaleAndUsage(t *testing.T) {
	root := t.TempDir()
	mk := func(pid int64, last time.Time, timeout time.Duration) string {
		h := Dir(root, "u", pid)
		if err := Ensure(root, h); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(h, ".cache/x"), strings.Repeat("x", 10000))
		ro := filepath.Join(h, "go/pkg/mod/m")
		os.MkdirAll(ro, 0o700)
		write(t, filepath.Join(ro, "f"), "f")
		os.Chmod(ro, 0o500)
		os.Chmod(filepath.Dir(ro), 0o500)
		if err := WriteRecord(h, Record{LastUsed: last, TimeoutSeconds: int64(timeout / time.Second)}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	now := time.Now()
	old := mk(1, now.Add(-40*24*time.Hour), time.Hour)
	fresh := mk(2, now.Add(-time.Hour), time.Hour)
	longJob := mk(3, now.Add(-3*time.Hour), 5*time.Hour) // its job may still run
	kept := mk(4, now.Add(-40*24*time.Hour), time.Hour)
	n, size, err := Usage(root)
	if err != nil || n != 4 || size < 4*10000 {
		t.Errorf("usage %d homes %d bytes %v", n, size, err)
	}
	removed, err := SweepStale(root, 2*time.Hour, kept)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != old {
		t.Errorf("removed %v, want [%s]", removed, old)
	}
	for _, h := range []string{fresh, longJob, kept} {
		if _, err := os.Stat(h); err != nil {
			t.Errorf("%s removed", h)
		}
	}
	if _, err := os.Stat(old + ".json"); err == nil {
		t.Error("the record of a removed home stays")
	}
	if n, _, _ := Usage(root); n != 3 {
		t.Errorf("%d homes after the sweep", n)
	}
	// The next sweep within the hour does not read every record again.
	again := mk(5, now.Add(-40*24*time.Hour), time.Hour)
	if removed, _ := SweepStale(root, 2*time.Hour, kept); len(removed) != 0 {
		t.Errorf("a second sweep within the hour removed %v", removed)
	}
	past := now.Add(-2 * time.Hour)
	os.Chtimes(filepath.Join(root, DirName, sweepStamp), past, past)
	if removed, _ := SweepStale(root, 2*time.Hour, kept); len(removed) != 1 || removed[0] != again {
		t.Errorf("the sweep an hour later removed %v, want [%s]", removed, again)
	}
}

func TestHasConfigFlag(t *testing.T) {
	for args, want := range map[string]bool{"-F x host": true, "-vF x host": true, "-Fx host": true, "-o ForwardAgent=no host": false, "host -- -F": false, "host": false} {
		if got := hasConfigFlag(strings.Fields(args)); got != want {
			t.Errorf("%q: %v", args, got)
		}
	}
}

// BenchmarkPrepareHome is a project home's share of prepare once the home
// exists: ensure, lock, read the record, sync three seeded files (nothing
// to copy), write the record.
func BenchmarkPrepareHome(b *testing.B) {
	runner, root := b.TempDir(), b.TempDir()
	for _, f := range []string{".gitconfig", ".ssh/config", ".ssh/known_hosts"} {
		os.MkdirAll(filepath.Dir(filepath.Join(runner, f)), 0o700)
		os.WriteFile(filepath.Join(runner, f), []byte(strings.Repeat("x", 2000)), 0o600)
	}
	plan := SeedPlan{From: runner, Entries: []string{".gitconfig", ".config/git/config", ".ssh/config", ".ssh/known_hosts"}}
	home := Dir(root, "u", 1)
	for i := 0; i < b.N; i++ {
		if err := Ensure(root, home); err != nil {
			b.Fatal(err)
		}
		unlock, err := Lock(home, true)
		if err != nil {
			b.Fatal(err)
		}
		rec, _ := ReadRecord(home)
		if _, err := Sync(home, &rec, plan); err != nil {
			b.Fatal(err)
		}
		rec.LastUsed = time.Now()
		if err := WriteRecord(home, rec); err != nil {
			b.Fatal(err)
		}
		unlock()
	}
}
