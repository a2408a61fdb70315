package layout

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// harnesses are the test harnesses under internal/: only tests may import
// them (a product binary that linked the runner-faithful driver or the
// sshd+dockerd harness would ship test code to every runner host).
var harnesses = []string{
	"gitlab.com/ferry-ci/ferry/internal/runnerdriver",
	"gitlab.com/ferry-ci/ferry/internal/docker/dockertest",
	"gitlab.com/ferry-ci/ferry/internal/docker/dockerjobs",
	"gitlab.com/ferry-ci/ferry/internal/asuser",
	"gitlab.com/ferry-ci/ferry/internal/proctest",
	"gitlab.com/ferry-ci/ferry/internal/ferrybuild",
}

// TestProductPackagesImportNoHarness lists every non-test package of the
// main module outside internal/ with its full dependency closure (`go list
// -deps`, test files excluded) and fails on any harness in it.
func TestProductPackagesImportNoHarness(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-json=ImportPath,Deps", "gitlab.com/ferry-ci/ferry/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if strings.HasPrefix(p.ImportPath, "gitlab.com/ferry-ci/ferry/internal/") {
			continue
		}
		seen++
		for _, d := range p.Deps {
			for _, h := range harnesses {
				if d == h || strings.HasPrefix(d, h+"/") {
					t.Errorf("product package %s imports test harness %s", p.ImportPath, d)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("only %d product packages listed: the check saw too little to mean anything", seen)
	}
}
