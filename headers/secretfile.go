package headers

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
)

// secretPool shares one watcher per secret file and scheme among every
// route that names it, across config reloads.
var secretPool = caddy.NewUsagePool()

// secretPollInterval is how often a secret file is read again. The file is
// small; reading it (rather than comparing its stat) follows in-place
// writes, renames and the symlink swaps of Kubernetes secrets alike.
var secretPollInterval = 500 * time.Millisecond

// maxSecretSize bounds a secret file.
const maxSecretSize = 64 << 10

// watchedSecret is the current header value made from a secret file.
type watchedSecret struct {
	path    string
	scheme  string
	poolKey string
	value   atomic.Pointer[string]

	failing bool // the last read failed; logged once until it reads again
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func watchSecret(path, scheme string) (*watchedSecret, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	key := scheme + "\x00" + abs
	val, _, err := secretPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		w := &watchedSecret{path: abs, scheme: scheme, poolKey: key, stop: make(chan struct{}), done: make(chan struct{})}
		v, err := w.read()
		if err != nil {
			return nil, err
		}
		w.value.Store(&v)
		go w.run()
		return w, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*watchedSecret), nil
}

// read returns the header value the file makes now. Errors never hold the
// secret.
func (w *watchedSecret) read() (string, error) {
	f, err := os.Open(w.path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
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
	}
	if w.scheme != "" {
		return w.scheme + " " + string(secret), nil
	}
	return string(secret), nil
}

func (w *watchedSecret) run() {
	defer close(w.done)
	t := time.NewTicker(secretPollInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.check()
		}
	}
}

func (w *watchedSecret) check() {
	logger := caddy.Log().Named("http.handlers.apikey.upstream_auth")
	v, err := w.read()
	if err != nil {
		if !w.failing {
			w.failing = true
			logger.Error("upstream secret file cannot be used; keeping the last good secret", zap.Error(err))
		}
		return
	}
	if w.failing {
		w.failing = false
	}
	if old := w.value.Load(); *old != v {
		w.value.Store(&v)
		logger.Info("upstream secret file changed; using the new secret", zap.String("file", w.path))
	}
}

// Destruct stops the watcher.
func (w *watchedSecret) Destruct() error {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	return nil
}
