package headers

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// observeSecretWatchers sends the watchers' logs to the returned observer
// and makes them read every interval, until the test ends. Watchers must be
// started after it.
func observeSecretWatchers(t *testing.T, interval time.Duration) *observer.ObservedLogs {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	oldLogger, oldInterval := secretLogger, secretPollInterval
	secretLogger = func() *zap.Logger { return zap.New(core) }
	secretPollInterval = interval
	t.Cleanup(func() { secretLogger, secretPollInterval = oldLogger, oldInterval })
	return logs
}

func writeSecret(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startWatcher watches path, read by hand with check (its own reads are an
// hour apart), and stops it when the test ends.
func startWatcher(t *testing.T, path, scheme string) *watchedSecret {
	t.Helper()
	w, err := watchSecret(path, scheme)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = secretPool.Delete(w.poolKey) })
	return w
}

func failures(logs *observer.ObservedLogs) []string {
	var msgs []string
	for _, e := range logs.FilterMessageSnippet("cannot be used").All() {
		msgs = append(msgs, e.ContextMap()["error"].(string))
	}
	return msgs
}

// TestSecretFileRefusesControlCharacters: a version of the secret with a
// character an HTTP header value cannot carry (every request would get 502
// from the upstream's transport) is refused like an empty one: the last
// good secret stays, and the failure is logged without the secret. One that
// is there when the config loads fails the load. A tab is fine.
func TestSecretFileRefusesControlCharacters(t *testing.T) {
	logs := observeSecretWatchers(t, time.Hour)
	path := filepath.Join(t.TempDir(), "secret")
	writeSecret(t, path, "good-secret\n")
	w := startWatcher(t, path, "Bearer")

	for _, bad := range []string{"bad\x01badsecret", "bad\x7fbadsecret", "bad\x00badsecret", "\x1b[31mbadsecret", "bad\x0bbadsecret\n"} {
		writeSecret(t, path, bad)
		w.check()
		if got := *w.value.Load(); got != "Bearer good-secret" {
			t.Errorf("after %q: the header value is %q, want the last good secret", bad, got)
		}
	}
	msgs := failures(logs)
	if len(msgs) == 0 || !strings.Contains(msgs[0], "control character") {
		t.Errorf("logged %q, want the control character named", msgs)
	}
	noSecretLogged(t, logs, "good-secret", "badsecret", "bad\x01", "bad\x7f")

	writeSecret(t, path, "tab\tsecret\n")
	w.check()
	if got := *w.value.Load(); got != "Bearer tab\tsecret" {
		t.Errorf("a secret with a tab: %q", got)
	}

	other := filepath.Join(t.TempDir(), "secret")
	writeSecret(t, other, "x\x01y")
	if w, err := watchSecret(other, ""); err == nil {
		_, _ = secretPool.Delete(w.poolKey)
		t.Error("a secret file with a control character loaded")
	} else if strings.Contains(err.Error(), "x\x01y") {
		t.Errorf("the error holds the secret: %v", err)
	}
}

// TestSecretFileLogsEachDistinctFailure: several bad versions in a row are
// each logged when their failure differs from the last one logged, and a
// failure that stays is logged once, not every read.
func TestSecretFileLogsEachDistinctFailure(t *testing.T) {
	logs := observeSecretWatchers(t, time.Hour)
	path := filepath.Join(t.TempDir(), "secret")
	writeSecret(t, path, "first-secret\n")
	w := startWatcher(t, path, "")

	steps := []struct {
		content string
		logs    string // the failure now logged, if any
	}{
		{"", "is empty"},
		{"\n\n", ""}, // empty again: already said
		{"two\nlines", "more than one line"},
		{"other\ntwo lines", ""}, // the same failure
		{"ctl\x02", "control character"},
		{"", "is empty"}, // back to an earlier failure: a new one in the row
		{"second-secret", ""},
		{"", "is empty"}, // failing again after a good read
	}
	want := 0
	for i, s := range steps {
		writeSecret(t, path, s.content)
		w.check()
		w.check() // a second read of the same version logs nothing
		msgs := failures(logs)
		if s.logs != "" {
			want++
		}
		if len(msgs) != want {
			t.Fatalf("step %d (%q): %d failures logged, want %d: %q", i, s.content, len(msgs), want, msgs)
		}
		if s.logs != "" && !strings.Contains(msgs[want-1], s.logs) {
			t.Errorf("step %d: logged %q, want %q", i, msgs[want-1], s.logs)
		}
	}
	if got := *w.value.Load(); got != "second-secret" {
		t.Errorf("the header value is %q, want the last good secret", got)
	}
	noSecretLogged(t, logs, "first-secret", "second-secret", "two", "lines", "ctl")
}

func noSecretLogged(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		text := fmt.Sprint(e.Message, e.ContextMap())
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("a log holds the secret %q: %s", secret, text)
			}
		}
	}
}
