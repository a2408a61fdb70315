package stages

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Work a Prepare hook leaves in the background is done when joinPrepare
// returns (prepare calls it before it returns: the deploy lock holder's PID
// file must exist for cleanup), and its error fails prepare named by the
// feature that started it.
func TestPrepareInBackgroundJoined(t *testing.T) {
	j := &Job{}
	var done atomic.Int32
	j.feature = "slow"
	j.PrepareInBackground(func() error {
		time.Sleep(100 * time.Millisecond)
		done.Add(1)
		return nil
	})
	j.feature = "failing"
	j.PrepareInBackground(func() error {
		time.Sleep(50 * time.Millisecond)
		done.Add(1)
		return errors.New("cannot start")
	})
	err := j.joinPrepare()
	if n := done.Load(); n != 2 {
		t.Fatalf("joinPrepare returned with %d of 2 pieces of work done", n)
	}
	if err == nil || !strings.Contains(err.Error(), "ferry: failing: cannot start") {
		t.Fatalf("err = %v, want the failing feature's error named by it", err)
	}
	if err := j.joinPrepare(); err != nil {
		t.Fatalf("a second join: %v", err)
	}
}
