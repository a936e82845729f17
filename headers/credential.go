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
	// Empty when File is set.
	Value string `json:"value,omitempty"`
	// File, instead of Value, is a file that holds the secret (trailing
	// line breaks and spaces are dropped). It is read when the config loads
	// and watched: a rotated secret takes effect within a second, with no
	// reload. A version that is empty or unreadable is logged and the last
	// good secret stays.
	File string `json:"file,omitempty"`
	// Scheme goes before the secret read from File, e.g. "Bearer".
	Scheme string `json:"scheme,omitempty"`
}

// Preset is how a known service takes its credential.
type Preset struct {
	Header string
	Scheme string // "" when the value goes in bare
}

var presets = map[string]Preset{
	"ollama":    {Header: "Authorization", Scheme: "Bearer"},
	"openai":    {Header: "Authorization", Scheme: "Bearer"},
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
func PresetNames() []string { return []string{"flowise", "langchain", "n8n", "ollama", "openai"} }

// Credential builds the credential for a preset and a secret value.
func (p Preset) Credential(value string) Credential {
	if p.Scheme != "" {
		value = p.Scheme + " " + value
	}
	return Credential{Header: p.Header, Value: value}
}

// FileCredential builds the credential for a preset and a secret file.
func (p Preset) FileCredential(path string) Credential {
	return Credential{Header: p.Header, Scheme: p.Scheme, File: path}
}

// Prepared is a Credential ready for requests.
type Prepared struct {
	header string
	value  string         // the whole value, when it has no request placeholders
	parts  []part         // the value in pieces, when it has
	file   *watchedSecret // the whole value, when it comes from a file
}

// part is a piece of a value: literal text (global placeholders already
// filled in) or a request placeholder to fill per request.
type part struct {
	literal     string
	placeholder string
}

// globalPrefixes name the placeholders that do not depend on the request.
var globalPrefixes = []string{"env.", "file.", "system."}

// Prepare checks c and fills its global placeholders. Placeholders are found
// in the configured value, never in what they expand to, so a secret that
// happens to contain braces stays as it is. The secret never appears in an
// error.
func (c Credential) Prepare() (Prepared, error) {
	if c.Header == "" || strings.ContainsAny(c.Header, " \t:") {
		return Prepared{}, fmt.Errorf("upstream_auth: invalid header name %q", c.Header)
	}
	if c.File != "" {
		if c.Value != "" {
			return Prepared{}, errors.New("upstream_auth: value and file are exclusive")
		}
		if strings.ContainsAny(c.Scheme, " \t\r\n") {
			return Prepared{}, fmt.Errorf("upstream_auth: invalid scheme %q: must be one word", c.Scheme)
		}
		w, err := watchSecret(c.File, c.Scheme)
		if err != nil {
			return Prepared{}, fmt.Errorf("upstream_auth: %w", err)
		}
		return Prepared{header: http.CanonicalHeaderKey(c.Header), file: w}, nil
	}
	if c.Scheme != "" {
		return Prepared{}, errors.New("upstream_auth: scheme goes with file; put it in value instead")
	}
	global := caddy.NewReplacer()
	var parts []part
	var lit strings.Builder
	dynamic := false
	for rest := c.Value; rest != ""; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			lit.WriteString(rest)
			break
		}
		if i > 0 && rest[i-1] == '\\' { // an escaped brace is literal
			lit.WriteString(rest[:i-1])
			lit.WriteByte('{')
			rest = rest[i+1:]
			continue
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			lit.WriteString(rest)
			break
		}
		lit.WriteString(rest[:i])
		name := rest[i+1 : i+j]
		rest = rest[i+j+1:]
		if isGlobal(name) {
			lit.WriteString(global.ReplaceKnown("{"+name+"}", ""))
			continue
		}
		parts = append(parts, part{literal: lit.String()}, part{placeholder: name})
		lit.Reset()
		dynamic = true
	}
	value := lit.String()
	if dynamic {
		parts = append(parts, part{literal: value})
		value = ""
	}
	for _, p := range append(parts, part{literal: value}) {
		if strings.ContainsAny(p.literal, "\r\n") {
			return Prepared{}, errors.New("upstream_auth: the value contains a line break")
		}
	}
	if !dynamic && (strings.TrimSpace(value) == "" || strings.HasSuffix(value, " ")) {
		if !strings.Contains(c.Value, "{") {
			return Prepared{}, fmt.Errorf("upstream_auth: the value for %s is empty", c.Header)
		}
		// The configured value names placeholders, not secrets.
		return Prepared{}, fmt.Errorf("upstream_auth: the value for %s is empty once placeholders are filled (from %q); is the variable or file set?", c.Header, c.Value)
	}
	return Prepared{header: http.CanonicalHeaderKey(c.Header), value: value, parts: parts}, nil
}

func isGlobal(name string) bool {
	for _, p := range globalPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Header is the header the credential is set in; "" when there is none.
func (p Prepared) Header() string { return p.header }

// Apply sets the credential on h, replacing what the client sent.
func (p Prepared) Apply(h http.Header, repl *caddy.Replacer) {
	if p.header == "" {
		return
	}
	v := p.value
	if p.file != nil {
		v = *p.file.value.Load()
	} else if p.parts != nil {
		var b strings.Builder
		for _, pt := range p.parts {
			if pt.placeholder == "" {
				b.WriteString(pt.literal)
			} else if s, ok := repl.GetString(pt.placeholder); ok {
				b.WriteString(s)
			}
		}
		v = b.String()
	}
	h[p.header] = []string{v}
}

// Release lets go of the credential's secret file watcher, if any. Safe on
// a zero Prepared and to call twice.
func (p *Prepared) Release() error {
	if p.file == nil {
		return nil
	}
	w := p.file
	p.file = nil
	_, err := secretPool.Delete(w.poolKey)
	return err
}
