package headers

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// Credential is the header the upstream expects its own credential in.
type Credential struct {
	// Header is the request header to set, e.g. "Authorization" or "X-N8N-API-KEY".
	Header string `json:"header"`
	// Value replaces whatever the client sent in Header. Global placeholders
	// such as {env.N8N_API_KEY} and {file./run/secrets/token} are read once
	// when the config loads; request placeholders are filled per request.
	Value string `json:"value"`
}

// Preset is how a known service takes its credential.
type Preset struct {
	Header string
	Scheme string // "" when the value goes in bare
}

var presets = map[string]Preset{
	"ollama":    {Header: "Authorization", Scheme: "Bearer"},
	"flowise":   {Header: "Authorization", Scheme: "Bearer"},
	"langchain": {Header: "Authorization", Scheme: "Bearer"},
	"n8n":       {Header: "X-N8N-API-KEY"},
}

// PresetFor returns the credential preset for a service name.
func PresetFor(service string) (Preset, bool) {
	p, ok := presets[service]
	return p, ok
}

// PresetNames lists the services that have a preset.
func PresetNames() []string { return []string{"flowise", "langchain", "n8n", "ollama"} }

// Credential builds the credential for a preset and a secret value.
func (p Preset) Credential(value string) Credential {
	if p.Scheme != "" {
		value = p.Scheme + " " + value
	}
	return Credential{Header: p.Header, Value: value}
}

// Prepared is a Credential ready for requests.
type Prepared struct {
	header  string
	value   string
	dynamic bool // value still holds request placeholders
}

// Prepare checks c and resolves its global placeholders. The resolved value
// never appears in an error.
func (c Credential) Prepare() (Prepared, error) {
	if c.Header == "" || strings.ContainsAny(c.Header, " \t:") {
		return Prepared{}, fmt.Errorf("upstream_auth: invalid header name %q", c.Header)
	}
	value := caddy.NewReplacer().ReplaceKnown(c.Value, "")
	if strings.TrimSpace(value) == "" || strings.HasSuffix(value, " ") {
		if !strings.Contains(c.Value, "{") {
			return Prepared{}, fmt.Errorf("upstream_auth: the value for %s is empty", c.Header)
		}
		// The unfilled value names placeholders, not secrets.
		return Prepared{}, fmt.Errorf("upstream_auth: the value for %s is empty once placeholders are filled (from %q); is the variable or file set?", c.Header, c.Value)
	}
	if strings.ContainsAny(value, "\r\n") {
		return Prepared{}, errors.New("upstream_auth: the value contains a line break")
	}
	return Prepared{
		header:  http.CanonicalHeaderKey(c.Header),
		value:   value,
		dynamic: strings.Contains(value, "{"),
	}, nil
}

// Apply sets the credential on h, replacing what the client sent.
func (p Prepared) Apply(h http.Header, repl *caddy.Replacer) {
	if p.header == "" {
		return
	}
	v := p.value
	if p.dynamic {
		v = repl.ReplaceAll(v, "")
	}
	h[p.header] = []string{v}
}
