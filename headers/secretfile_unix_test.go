//go:build unix

package headers

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecretFileRefusesFIFO: a FIFO put where the secret file was (or there
// when the config loads) is "cannot be used", like any file that is not a
// regular one: opening it would block the watcher, and Caddy's stop behind
// it, until something wrote to the FIFO. The last good secret stays, and
// stopping the watcher returns at once.
func TestSecretFileRefusesFIFO(t *testing.T) {
	logs := observeSecretWatchers(t, 10*time.Millisecond)
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	writeSecret(t, path, "good-secret\n")
	w, err := watchSecret(path, "Bearer")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, let a reader blocked on the FIFO go (a writer that
	// opens and closes it gives it end of file), or the test never ends.
	defer unblockFIFO(path)

	deadline := time.Now().Add(3 * time.Second)
	for len(failures(logs)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if msgs := failures(logs); len(msgs) != 1 || !strings.Contains(msgs[0], "not a regular file") {
		t.Errorf("with a FIFO as the secret file, logged %q, want it named not a regular file", msgs)
	}
	if got := *w.value.Load(); got != "Bearer good-secret" {
		t.Errorf("the header value is %q, want the last good secret", got)
	}
	stopped := make(chan struct{})
	go func() {
		_, _ = secretPool.Delete(w.poolKey) // Destruct
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		unblockFIFO(path)
		t.Fatal("stopping the watcher waited on the FIFO")
	}

	// A FIFO there when the config loads fails the load, at once.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	defer unblockFIFO(fifo)
	loaded := make(chan error, 1)
	go func() {
		w, err := watchSecret(fifo, "")
		if err == nil {
			_, _ = secretPool.Delete(w.poolKey)
		}
		loaded <- err
	}()
	select {
	case err := <-loaded:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("loading a FIFO as the secret file: %v", err)
		}
	case <-time.After(2 * time.Second):
		unblockFIFO(fifo)
		t.Fatal("loading a FIFO as the secret file blocked")
	}
}

func unblockFIFO(path string) {
	if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
}
