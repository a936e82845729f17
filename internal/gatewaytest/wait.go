package gatewaytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// WaitUntil polls check until it holds, or fails the test after within.
func WaitUntil(t testing.TB, what string, within time.Duration, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// WaitForLog waits up to 5 s for a log file (Caddy's log writers buffer) to
// hold want, and returns its content.
func WaitForLog(t testing.TB, path, want string) string {
	t.Helper()
	return WaitForLogCount(t, path, want, 1)
}

// WaitForLogCount waits up to 5 s for a log file to hold want at least n
// times, and returns its content. A failure shows the log when n > 1.
func WaitForLogCount(t testing.TB, path, want string, n int) string {
	t.Helper()
	return WaitForLogCountWithin(t, path, want, n, 5*time.Second)
}

// WaitForLogCountWithin is WaitForLogCount for a line that may take longer
// than 5 s to come.
func WaitForLogCountWithin(t testing.TB, path, want string, n int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		data, _ := os.ReadFile(path)
		if strings.Count(string(data), want) >= n {
			return string(data)
		}
		if time.Now().After(deadline) {
			if n == 1 {
				t.Fatalf("%s never contained %s", filepath.Base(path), want)
			}
			t.Fatalf("%s never held %q %d times:\n%s", filepath.Base(path), want, n, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
