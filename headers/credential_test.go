package headers

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestPresets(t *testing.T) {
	for svc, want := range map[string][2]string{
		"ollama":    {"Authorization", "Bearer s"},
		"flowise":   {"Authorization", "Bearer s"},
		"langchain": {"Authorization", "Bearer s"},
		"n8n":       {"X-N8N-API-KEY", "s"},
	} {
		p, ok := PresetFor(svc)
		if !ok {
			t.Fatalf("no preset for %s", svc)
		}
		c := p.Credential("s")
		if c.Header != want[0] || c.Value != want[1] {
			t.Errorf("%s: %+v", svc, c)
		}
	}
	if _, ok := PresetFor("billing"); ok {
		t.Error("preset for an unknown service")
	}
	for _, name := range PresetNames() {
		if _, ok := PresetFor(name); !ok {
			t.Errorf("PresetNames lists %s without a preset", name)
		}
	}
}

func TestPrepareResolvesGlobalPlaceholdersOnce(t *testing.T) {
	t.Setenv("APIKEY_TEST_TOKEN", "from-env")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Credential{Header: "authorization", Value: "Bearer {env.APIKEY_TEST_TOKEN}"}.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Bearer client-sent"}}
	p.Apply(h, caddy.NewReplacer())
	if got := h.Values("Authorization"); len(got) != 1 || got[0] != "Bearer from-env" {
		t.Errorf("Authorization = %q", got)
	}
	t.Setenv("APIKEY_TEST_TOKEN", "changed")
	p.Apply(h, caddy.NewReplacer())
	if h.Get("Authorization") != "Bearer from-env" {
		t.Error("env placeholder resolved per request, not once")
	}

	p, err = Credential{Header: "X-N8N-API-KEY", Value: "{file." + secret + "}"}.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	p.Apply(h, caddy.NewReplacer())
	if h.Get("X-N8N-API-KEY") != "from-file" {
		t.Errorf("file placeholder: %q", h.Get("X-N8N-API-KEY"))
	}
}

func TestPrepareKeepsRequestPlaceholders(t *testing.T) {
	p, err := Credential{Header: "X-Caller", Value: "gateway:{http.apikey.id}"}.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	repl := caddy.NewReplacer()
	repl.Set("http.apikey.id", "k_one")
	h := http.Header{}
	p.Apply(h, repl)
	if h.Get("X-Caller") != "gateway:k_one" {
		t.Errorf("X-Caller = %q", h.Get("X-Caller"))
	}
}

func TestPrepareRejectsEmpty(t *testing.T) {
	os.Unsetenv("APIKEY_TEST_UNSET")
	for _, c := range []Credential{
		{Header: "Authorization", Value: "Bearer {env.APIKEY_TEST_UNSET}"},
		{Header: "X-N8N-API-KEY", Value: "{env.APIKEY_TEST_UNSET}"},
		{Header: "X-N8N-API-KEY", Value: "{file./nonexistent/secret}"},
		{Header: "", Value: "x"},
		{Header: "Bad Header", Value: "x"},
	} {
		if _, err := c.Prepare(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	t.Setenv("APIKEY_TEST_SECRET", "hunter2hunter2")
	_, err := Credential{Header: "X", Value: "{env.APIKEY_TEST_SECRET}\nx"}.Prepare()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("line break: %v", err)
	}
}

// TestPrepareLeavesBracesInSecrets: a secret that contains braces, even one
// shaped like a placeholder, is sent exactly as it is.
func TestPrepareLeavesBracesInSecrets(t *testing.T) {
	t.Setenv("APIKEY_TEST_BRACED", "s3cr{et}-{http.request.header.X-Evil}")
	p, err := Credential{Header: "X-Token", Value: "{env.APIKEY_TEST_BRACED}"}.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	repl := caddy.NewReplacer()
	repl.Set("http.request.header.X-Evil", "injected")
	h := http.Header{}
	p.Apply(h, repl)
	if got := h.Get("X-Token"); got != "s3cr{et}-{http.request.header.X-Evil}" {
		t.Errorf("the secret was changed: %q", got)
	}
	// Escaped braces in the config are literal.
	p, _ = Credential{Header: "X-Token", Value: `a\{b}`}.Prepare()
	h = http.Header{}
	p.Apply(h, caddy.NewReplacer())
	if got := h.Get("X-Token"); got != "a{b}" {
		t.Errorf("escaped brace: %q", got)
	}
}
