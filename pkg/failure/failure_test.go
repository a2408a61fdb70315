package failure

import (
	"errors"
	"fmt"
	"testing"
)

func TestBuildSurvivesWrapping(t *testing.T) {
	base := errors.New("KUBECONFIG: invalid base64 at byte 12")
	err := fmt.Errorf("prepare: %w", Build(base))
	if !IsBuild(err) {
		t.Fatalf("wrapped build error not recognised: %v", err)
	}
	if !errors.Is(err, base) {
		t.Fatalf("Build hides the original error")
	}
	if IsBuild(fmt.Errorf("disk full: %w", base)) {
		t.Fatalf("a plain error was classified as a build failure")
	}
	if Build(nil) != nil {
		t.Fatalf("Build(nil) must be nil")
	}
	if IsBuild(errors.Join(errors.New("x"), Build(base))) != true {
		t.Fatalf("a joined error holding a build failure must count as one")
	}
}
