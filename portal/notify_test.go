package portal

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// TestWebhookURLs: https to public hosts only; loopback only when the
// operator allows it; private addresses never.
func TestWebhookURLs(t *testing.T) {
	strict, loose := newNotifier("", false, zap.NewNop()), newNotifier("", true, zap.NewNop())
	for _, c := range []struct {
		url           string
		strict, loose bool
	}{
		{"https://hooks.example.com/x", true, true},
		{"http://hooks.example.com/x", false, false},
		{"http://127.0.0.1:9/x", false, true},
		{"https://localhost/x", false, true},
		{"https://10.0.0.8/x", false, false},
		{"https://169.254.169.254/latest", false, false},
		{"https://user:pw@hooks.example.com/", false, false},
		{"ftp://hooks.example.com/", false, false},
	} {
		if got := strict.checkWebhookURL(c.url) == nil; got != c.strict {
			t.Errorf("%s without webhooks_loopback: accepted %v, want %v", c.url, got, c.strict)
		}
		if got := loose.checkWebhookURL(c.url) == nil; got != c.loose {
			t.Errorf("%s with webhooks_loopback: accepted %v, want %v", c.url, got, c.loose)
		}
	}
	// Checked again when connecting: a loopback receiver without the option.
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	if _, err := strict.post(&job{hook: webhook{URL: srv.URL, Secret: "s"}, body: []byte("{}")}); err == nil {
		t.Error("a delivery to loopback went out without webhooks_loopback")
	}
}

// TestDeliveriesAreRetried: a receiver that fails twice gets the notice on
// the third attempt, after backoffs; one that always fails is given up on
// after MaxAttempts.
func TestDeliveriesAreRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 || r.URL.Path == "/down" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	n := newNotifier("", true, zap.NewNop())
	n.backoff = 10 * time.Millisecond
	defer n.close()
	if _, err := n.setWebhook("alice", srv.URL+"/up", false); err != nil {
		t.Fatal(err)
	}
	n.notify("alice", Notice{Event: "key.paused", KeyID: "k1", Time: time.Now()})
	d := waitDelivered(t, n, "alice")
	if d.Attempts != 3 || d.Status != 200 || d.Error != "" {
		t.Errorf("delivery: %+v, want 3 attempts ending in 200", d)
	}
	if _, err := n.setWebhook("bob", srv.URL+"/down", false); err != nil {
		t.Fatal(err)
	}
	n.notify("bob", Notice{Event: "key.revoked", KeyID: "k2", Time: time.Now()})
	d = waitDelivered(t, n, "bob")
	if d.Attempts != MaxAttempts || d.Status != 503 || d.Error == "" {
		t.Errorf("delivery to a receiver that is down: %+v, want %d attempts, 503, an error", d, MaxAttempts)
	}
}

// TestDeliveryQueueIsBounded: past MaxQueue, the oldest delivery is dropped
// and counted.
func TestDeliveryQueueIsBounded(t *testing.T) {
	n := newNotifier("", true, zap.NewNop())
	n.running = true // no worker: the queue only fills
	if _, err := n.setWebhook("alice", "https://hooks.example.com/x", false); err != nil {
		t.Fatal(err)
	}
	for range MaxQueue + 5 {
		n.notify("alice", Notice{Event: "key.paused", KeyID: "k1", Time: time.Now()})
	}
	if len(n.queue) != MaxQueue || n.Dropped.Load() != 5 {
		t.Errorf("queue %d, dropped %d; want %d and 5", len(n.queue), n.Dropped.Load(), MaxQueue)
	}
	if _, notices, ds := n.of("alice"); len(notices) != MaxNotices || len(ds) != MaxDeliveries {
		t.Errorf("%d notices and %d deliveries kept, want %d and %d", len(notices), len(ds), MaxNotices, MaxDeliveries)
	}
}

func waitDelivered(t *testing.T, n *notifier, owner string) Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, ds := n.of(owner); len(ds) > 0 && ds[0].Done {
			return ds[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's delivery did not end", owner)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLeakReportsAreTold: a key event the gateway publishes (here a leak
// report's) becomes a notice for the key's owner, found in the portal's
// store; a key of another store tells no one.
func TestLeakReportsAreTold(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	store := keyfile.NewStore(path)
	if err := store.Create(context.Background(), keystore.Record{ID: "k_leaky", Owner: "alice", Hash: "sha256:" + strings.Repeat("ab", 32), Type: "dev", Role: "reader"}); err != nil {
		t.Fatal(err)
	}
	tracker, otherStore := activity.New(), activity.New()
	s, err := New("/portal", Policy{Services: []Service{{Name: "echo"}}}, Backend{Store: store, Activity: tracker})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The same id in another store's activity is another key.
	otherStore.Publish(activity.KeyEvent{KeyID: "k_leaky", Event: "key.leaked", Detail: "found elsewhere", At: time.Now()})
	tracker.Publish(activity.KeyEvent{KeyID: "k_elsewhere", Event: "key.leaked", Detail: "found", At: time.Now()})
	tracker.Publish(activity.KeyEvent{KeyID: "k_leaky", Event: "key.leaked", Detail: "found at https://github.com/a/b (commit); action: revoke", At: time.Now()})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, notices, _ := s.notes.of("alice")
		if len(notices) == 1 {
			if n := notices[0]; n.Event != "key.leaked" || n.KeyID != "k_leaky" || !strings.Contains(n.Text, "https://github.com/a/b") {
				t.Errorf("notice: %+v", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice has %d notices, want 1", len(notices))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
