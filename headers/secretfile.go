package headers

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/poll"
)

// secretPool shares one watcher per secret file and scheme among every
// route that names it, across config reloads.
var secretPool = caddy.NewUsagePool()

// secretPollInterval is how often a secret file is read again. The file is
// small; reading it (rather than comparing its stat) follows in-place
// writes, renames and the symlink swaps of Kubernetes secrets alike.
var secretPollInterval = 500 * time.Millisecond

// maxSecretSize bounds a secret file.
const maxSecretSize = capped.Secret

// watchedSecret is the current header value made from a secret file.
type watchedSecret struct {
	path    string
	scheme  string
	poolKey string
	value   atomic.Pointer[string]

	lastErr string // the failure last logged, "" while reads work: each distinct one is logged once
	poller  *poll.Poller
}

func watchSecret(path, scheme string) (*watchedSecret, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	key := scheme + "\x00" + abs
	val, _, err := secretPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		w := &watchedSecret{path: abs, scheme: scheme, poolKey: key}
		v, err := w.read()
		if err != nil {
			return nil, err
		}
		w.value.Store(&v)
		w.poller = poll.Start(secretPollInterval, w.check)
		return w, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*watchedSecret), nil
}

// read returns the header value the file makes now. Errors never hold the
// secret.
//
// Only a regular file is read (a symbolic link to one is fine): anything
// else, a FIFO above all, could block the read, and with it the watcher and
// Caddy's stop, forever. It is checked before the open, and again on the
// opened file, which is opened without blocking in case it was swapped
// in between.
func (w *watchedSecret) read() (string, error) {
	info, err := os.Stat(w.path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", notRegular(w.path, info.Mode())
	}
	f, err := os.OpenFile(w.path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil {
		return "", fmt.Errorf("secret file %s: %w", w.path, err)
	} else if !info.Mode().IsRegular() {
		return "", notRegular(w.path, info.Mode())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", fmt.Errorf("secret file %s: %w", w.path, err)
	}
	if len(data) > maxSecretSize {
		return "", fmt.Errorf("secret file %s is over %d bytes", w.path, maxSecretSize)
	}
	secret := bytes.TrimRight(data, " \t\r\n")
	switch {
	case len(secret) == 0:
		return "", fmt.Errorf("secret file %s is empty", w.path)
	case bytes.ContainsAny(secret, "\r\n"):
		return "", fmt.Errorf("secret file %s holds more than one line", w.path)
	case !validHeaderValue(secret):
		// Every request would fail at the upstream's transport (502).
		return "", fmt.Errorf("secret file %s holds a control character, which an HTTP header cannot carry", w.path)
	}
	if w.scheme != "" {
		return w.scheme + " " + string(secret), nil
	}
	return string(secret), nil
}

func notRegular(path string, mode fs.FileMode) error {
	return fmt.Errorf("secret file %s is not a regular file (%s)", path, mode.Type())
}

// validHeaderValue reports whether b may be sent as an HTTP header value,
// as Go's HTTP transports check it: no control characters but tab.
func validHeaderValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// secretLogger is the watchers' logger; a variable for tests.
var secretLogger = func() *zap.Logger { return caddy.Log().Named("http.handlers.apikey.upstream_auth") }

// check reads the file again. A failure is logged when it differs from the
// last one logged (a new bad version in a row, say an empty file and then
// one with two lines), so each distinct failure is logged once, not every
// 500 ms; the errors never hold the secret.
func (w *watchedSecret) check() {
	logger := secretLogger()
	v, err := w.read()
	if err != nil {
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			logger.Error("upstream secret file cannot be used; keeping the last good secret", zap.Error(err))
		}
		return
	}
	w.lastErr = ""
	if old := w.value.Load(); *old != v {
		w.value.Store(&v)
		logger.Info("upstream secret file changed; using the new secret", zap.String("file", w.path))
	}
}

// Destruct stops the watcher.
func (w *watchedSecret) Destruct() error {
	w.poller.Stop()
	return nil
}
