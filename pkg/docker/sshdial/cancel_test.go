package sshdial_test

import (
	"context"
	"net"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/pkg/docker/sshdial"
)

// TestDialCancelledMidHandshake: a server that accepts and never speaks
// keeps the SSH handshake waiting; cancelling the context ends the dial at
// once instead of after the timeout (a holder told to stop while starting
// must not wait it out).
func TestDialCancelledMidHandshake(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent: never sends its banner
		}
	}()
	target, err := sshdial.ParseURL("ssh://ci@" + l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err = sshdial.Dial(ctx, sshdial.Config{Target: target, Timeout: 20 * time.Second, TrustOnFirstUse: true})
	if err == nil {
		t.Fatal("Dial to a silent server succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Dial returned %v after its context was cancelled at 200ms (timeout 20s): %v", d, err)
	}
}
