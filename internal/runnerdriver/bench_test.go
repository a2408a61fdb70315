package runnerdriver

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkRunJob measures a whole one-command job through ferry: repository,
// config, prepare, four stage calls, cleanup.
func BenchmarkRunJob(b *testing.B) {
	if ferryBin == "" {
		b.Fatal(buildErr)
	}
	base := b.TempDir()
	d, err := New(Config{FerryBinary: ferryBin, BaseDir: base, Env: hostEnv(base),
		ExtraArgs: []string{"--state-dir=" + base + "/state"}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r := d.RunJob(context.Background(), Job{Name: "bench", Script: []string{"true"}})
		if r.Status != StatusSuccess {
			b.Fatalf("%s: %s\n%s", r.Status, r.Error, StripANSI(r.Log))
		}
	}
}

func BenchmarkShellEscape(b *testing.B) {
	s := strings.Repeat("export KUBECONFIG=$'a b'\n", 200)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		_ = shellEscape(s)
	}
}
