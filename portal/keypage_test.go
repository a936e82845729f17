package portal

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// pageServer is a portal on a key file holding recs, with an audit log
// whose recent entries are trail.
func pageServer(t *testing.T, trail []audit.Entry, recs ...keystore.Record) *Server {
	t.Helper()
	for i := range recs {
		key, err := keystore.Generate(keystore.Dev)
		if err != nil {
			t.Fatal(err)
		}
		recs[i].Hash = keystore.Sum(key).Encode()
	}
	data, _ := json.Marshal(map[string]any{"keys": append([]keystore.Record{}, recs...)})
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New("/portal", testPolicy(t, Policy{Admins: []string{"admin"}, RotationGrace: 24 * time.Hour}), Backend{
		Store:       keyfile.NewStore(path),
		RecentAudit: func(int) ([]audit.Entry, error) { return trail, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func getPage(t *testing.T, s *Server, user, path string) string {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", path, nil), user)
	if w.Code != http.StatusOK {
		t.Fatalf("%s as %s: %d", path, user, w.Code)
	}
	return w.Body.String()
}

// TestKeyPageOffersWhatWorks: an expired key's page offers no Edit and no
// Rotate (both would be refused) and says why; a working key's page says
// the rotation grace in words.
func TestKeyPageOffersWhatWorks(t *testing.T) {
	now := time.Now().UTC()
	rec := func(id, expires string) keystore.Record {
		return keystore.Record{ID: id, Type: "dev", Role: "reader", Services: []string{"echo"}, Owner: "alice",
			CreatedAt: now.Add(-48 * time.Hour).Format(time.RFC3339), ExpiresAt: expires}
	}
	s := pageServer(t, nil, rec("k_old", now.Add(-time.Hour).Format(time.RFC3339)), rec("k_live", now.Add(30*24*time.Hour).Format(time.RFC3339)))

	old := getPage(t, s, "alice", "/portal/keys/k_old")
	if strings.Contains(old, `action="/portal/keys/k_old/rotate"`) || strings.Contains(old, `action="/portal/keys/k_old"`) {
		t.Error("the expired key's page offers Edit or Rotate")
	}
	if !strings.Contains(old, "has expired") {
		t.Error("the expired key's page does not say it has expired")
	}
	live := getPage(t, s, "alice", "/portal/keys/k_live")
	if !strings.Contains(live, `action="/portal/keys/k_live/rotate"`) || !strings.Contains(live, `action="/portal/keys/k_live"`) {
		t.Error("the working key's page does not offer Edit and Rotate, so the check above proves nothing")
	}
	if !strings.Contains(live, "keeps working for 24 hours more") || strings.Contains(live, "24h0m0s") {
		t.Errorf("the rotation grace is not said in words: %q", regexp.MustCompile(`keeps working for [^,]*`).FindString(live))
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "24 hours", time.Hour: "1 hour", 90 * time.Minute: "1 hour 30 minutes",
		7 * 24 * time.Hour: "7 days", 48 * time.Hour: "2 days", 30 * time.Second: "30 seconds", 0: "0 seconds",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestAdminAuditShowsRefusals: the admin page's audit table shows a
// refusal's decision and client address, as the gateway writes them.
func TestAdminAuditShowsRefusals(t *testing.T) {
	s := pageServer(t, []audit.Entry{{"ts": "2026-12-02T10:00:00Z", "event": "refused", "key_id": "k_x",
		"decision": "ip_not_allowed", "client_ip": "203.0.113.9"}})
	page := getPage(t, s, "admin", "/portal/admin")
	for _, want := range []string{"decision=ip_not_allowed", "client_ip=203.0.113.9"} {
		if !strings.Contains(page, want) {
			t.Errorf("the admin page's audit table lacks %s", want)
		}
	}
}

// TestScrollableRegionsFocusable: every <pre> (which scrolls sideways) can
// be reached with the keyboard and is named (axe's
// scrollable-region-focusable).
func TestScrollableRegionsFocusable(t *testing.T) {
	pre := regexp.MustCompile(`<pre[^>]*>`)
	n := 0
	err := fs.WalkDir(templateFiles, "templates", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := templateFiles.ReadFile(path)
		for _, tag := range pre.FindAllString(string(data), -1) {
			n++
			if !strings.Contains(tag, `tabindex="0"`) || !strings.Contains(tag, "aria-label=") {
				t.Errorf("%s: %s is not focusable and named", path, tag)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no <pre> in the templates, so the check proves nothing")
	}
}

// TestKeysPageOffersCreateBelowTheLimit: at max_keys working keys, my keys
// offers no Create a key (it would be refused) and says what to do.
func TestKeysPageOffersCreateBelowTheLimit(t *testing.T) {
	now := time.Now().UTC()
	s := pageServer(t, nil, keystore.Record{ID: "k_one", Type: "dev", Role: "reader", Services: []string{"echo"}, Owner: "alice",
		CreatedAt: now.Format(time.RFC3339), ExpiresAt: now.Add(24 * time.Hour).Format(time.RFC3339)})
	s.policy.MaxKeys = 1
	if page := getPage(t, s, "alice", "/portal/keys"); strings.Contains(page, `class="button" href="/portal/keys/new"`) || !strings.Contains(page, "Revoke one") {
		t.Error("at 1 of 1 working keys, my keys offers Create a key")
	}
	s.policy.MaxKeys = 2
	if page := getPage(t, s, "alice", "/portal/keys"); !strings.Contains(page, `class="button" href="/portal/keys/new"`) {
		t.Error("at 1 of 2 working keys, my keys does not offer Create a key, so the check above proves nothing")
	}
}
