package poll

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestPollerChecksUntilStopped: the check runs again and again, never
// after Stop has returned, and Stop may be called twice.
func TestPollerChecksUntilStopped(t *testing.T) {
	var checks atomic.Int64
	p := Start(time.Millisecond, func() { checks.Add(1) })
	deadline := time.Now().Add(10 * time.Second)
	for checks.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d checks in 10 s at an interval of 1 ms", checks.Load())
		}
		time.Sleep(time.Millisecond)
	}
	p.Stop()
	after := checks.Load()
	time.Sleep(20 * time.Millisecond) // 20 intervals in which no check may run
	if n := checks.Load(); n != after {
		t.Errorf("%d checks ran after Stop returned", n-after)
	}
	p.Stop()
}
