package keystore

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func hashOf(t *testing.T, typ Type) (key, hash string) {
	t.Helper()
	k, err := Generate(typ)
	if err != nil {
		t.Fatal(err)
	}
	return k, Sum(k).Encode()
}

// request makes a request that carries a replacer, as in a Caddy handler.
func request(method, path string) *http.Request {
	r := httptest.NewRequest(method, path, nil)
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
}

func TestRolesAllowMethods(t *testing.T) {
	_, h := hashOf(t, Dev)
	methods := []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE"}
	want := map[string]string{
		"reader": "GET HEAD OPTIONS",
		"writer": "GET HEAD OPTIONS POST PUT PATCH",
		"admin":  "GET HEAD OPTIONS POST PUT PATCH DELETE TRACE",
	}
	for role, allowed := range want {
		k, err := Compile(Record{ID: "k", Hash: h, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range methods {
			if k.Permits(request(m, "/x")) {
				got = append(got, m)
			}
		}
		if strings.Join(got, " ") != allowed {
			t.Errorf("%s allows %v, want %s", role, got, allowed)
		}
	}
}

func TestCustomPermissions(t *testing.T) {
	_, h := hashOf(t, Dev)
	k, err := Compile(Record{ID: "k", Hash: h, Role: "custom",
		Permissions: []string{"GET /api/*", "post /api/chat", "* /v1/models/*"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path string
		ok           bool
	}{
		{"GET", "/api/tags", true},
		{"GET", "/API/Tags", true}, // Caddy's path matcher is case-insensitive
		{"POST", "/api/chat", true},
		{"POST", "/api/pull", false},
		{"DELETE", "/api/tags", false},
		{"DELETE", "/v1/models/x", true},
		{"GET", "/other", false},
		{"GET", "/api/../admin", false}, // cleaned before matching
	} {
		if got := k.Permits(request(c.method, c.path)); got != c.ok {
			t.Errorf("%s %s: permitted = %v, want %v", c.method, c.path, got, c.ok)
		}
	}
}

func TestPermissionsNarrowARole(t *testing.T) {
	_, h := hashOf(t, Dev)
	k, err := Compile(Record{ID: "k", Hash: h, Role: "reader", Permissions: []string{"* /api/*"}})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Permits(request("GET", "/api/tags")) {
		t.Error("reader with permission * /api/* may not GET /api/tags")
	}
	if k.Permits(request("POST", "/api/tags")) {
		t.Error("a permission widened reader to POST")
	}
	if k.Permits(request("GET", "/admin")) {
		t.Error("a permission did not narrow the reader")
	}
}

func TestServicesAndIPs(t *testing.T) {
	_, h := hashOf(t, Dev)
	k, err := Compile(Record{ID: "k", Hash: h, Role: "reader",
		Services: []string{"ollama"}, AllowedIPs: []string{"203.0.113.0/24", "2001:db8::1", "192.0.2.5"}})
	if err != nil {
		t.Fatal(err)
	}
	if !k.AllowsService("ollama") || k.AllowsService("n8n") {
		t.Error("services not honoured")
	}
	for addr, ok := range map[string]bool{
		"203.0.113.9": true, "203.0.114.1": false, "2001:db8::1": true, "2001:db8::2": false,
		"192.0.2.5": true, "::ffff:192.0.2.5": true, "192.0.2.6": false,
	} {
		if got := k.AllowsIP(netip.MustParseAddr(addr)); got != ok {
			t.Errorf("AllowsIP(%s) = %v, want %v", addr, got, ok)
		}
	}

	all, _ := Compile(Record{ID: "k", Hash: h, Role: "reader", Services: []string{"*"}})
	if !all.AllowsService("anything") {
		t.Error(`"*" does not allow every service`)
	}
	none, _ := Compile(Record{ID: "k", Hash: h, Role: "reader"})
	if none.AllowsService("ollama") {
		t.Error("a key without services reaches a named service")
	}
	if none.RestrictsIP() || !none.AllowsIP(netip.MustParseAddr("198.51.100.1")) {
		t.Error("a key without allowed_ips is limited by address")
	}
}

func TestExpiry(t *testing.T) {
	_, h := hashOf(t, Dev)
	k, err := Compile(Record{ID: "k", Hash: h, Role: "reader", ExpiresAt: "2027-01-01T00:00:00Z"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	if k.Expired(at.Add(-time.Nanosecond)) || !k.Expired(at) {
		t.Error("expiry is not at expires_at")
	}
}

func TestCompileNamesTheField(t *testing.T) {
	_, h := hashOf(t, Dev)
	_, h2 := hashOf(t, Dev)
	for _, c := range []struct {
		rec   Record
		field string
	}{
		{Record{Hash: h, Role: "reader"}, "id"},
		{Record{ID: "k", Role: "reader"}, "hash"},
		{Record{ID: "k", Hash: "sha256:abc", Role: "reader"}, "hash"},
		{Record{ID: "k", Hash: h}, "role"},
		{Record{ID: "k", Hash: h, Role: "root"}, "role"},
		{Record{ID: "k", Hash: h, Role: "reader", Type: "test"}, "type"},
		{Record{ID: "k", Hash: h, Role: "custom"}, "permissions"},
		{Record{ID: "k", Hash: h, Role: "custom", Permissions: []string{"GET"}}, "permissions[0]"},
		{Record{ID: "k", Hash: h, Role: "custom", Permissions: []string{"GET /a", "G3T /b"}}, "permissions[1]"},
		{Record{ID: "k", Hash: h, Role: "custom", Permissions: []string{"GET api"}}, "permissions[0]"},
		{Record{ID: "k", Hash: h, Role: "reader", AllowedIPs: []string{"10.0.0.0/33"}}, "allowed_ips[0]"},
		{Record{ID: "k", Hash: h, Role: "reader", AllowedIPs: []string{"::1", "localhost"}}, "allowed_ips[1]"},
		{Record{ID: "k", Hash: h, Role: "reader", ExpiresAt: "2027-01-01"}, "expires_at"},
		{Record{ID: "k", Hash: h, Role: "reader", Services: []string{""}}, "services[0]"},
		{Record{ID: "k", Hash: h, Role: "reader", PreviousHashes: []PreviousHash{{Hash: "x", ValidUntil: "2027-01-01T00:00:00Z"}}}, "previous_hashes[0].hash"},
		{Record{ID: "k", Hash: h, Role: "reader", PreviousHashes: []PreviousHash{{Hash: h2}}}, "previous_hashes[0].valid_until"},
		{Record{ID: "k", Hash: h, Role: "reader", PreviousHashes: []PreviousHash{{Hash: h2, ValidUntil: "soon"}}}, "previous_hashes[0].valid_until"},
		{Record{ID: "k", Hash: h, Role: "reader", PreviousHashes: []PreviousHash{{Hash: h, ValidUntil: "2027-01-01T00:00:00Z"}}}, "previous_hashes[0].hash"},
	} {
		_, err := Compile(c.rec)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("want an error on %s, got %v", c.field, err)
			continue
		}
		if fe.Field != c.field {
			t.Errorf("error names field %q, want %q (%v)", fe.Field, c.field, err)
		}
		if strings.Contains(err.Error(), strings.TrimPrefix(h, "sha256:")) {
			t.Errorf("error on %s holds the hash", c.field)
		}
	}
}

func TestQuotaAndRateFields(t *testing.T) {
	_, h := hashOf(t, Dev)
	n := int64(250)
	k, err := Compile(Record{ID: "k", Hash: h, Role: "reader", QuotaPerDay: &n, Rate: "20/s"})
	if err != nil {
		t.Fatal(err)
	}
	if !k.HasQuota || k.QuotaPerDay != 250 || k.Rate.Limit != 20 || k.Rate.Period != time.Second {
		t.Errorf("quota %v %d, rate %+v", k.HasQuota, k.QuotaPerDay, k.Rate)
	}
	zero := int64(0)
	if k, err := Compile(Record{ID: "k", Hash: h, Role: "reader", QuotaPerDay: &zero}); err != nil || !k.HasQuota {
		t.Errorf("a zero quota_per_day is not kept: %v", err)
	}
	if k, _ := Compile(Record{ID: "k", Hash: h, Role: "reader"}); k.HasQuota || !k.Rate.IsZero() {
		t.Error("a key without quota fields has limits of its own")
	}
	neg := int64(-1)
	for field, rec := range map[string]Record{
		"quota_per_day": {ID: "k", Hash: h, Role: "reader", QuotaPerDay: &neg},
		"rate":          {ID: "k", Hash: h, Role: "reader", Rate: "20/day"},
	} {
		var fe *FieldError
		if _, err := Compile(rec); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
}
