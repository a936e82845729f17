package gatewaytest

import (
	"fmt"
	"strings"
)

// Site is a gateway on 127.0.0.1:Port with one apikey route, its keys in a
// file or on Redis, its counters in memory (in a file of their own with
// CountersFile) or on Redis.
type Site struct {
	// Port is the site's; AdminPort the admin endpoint's, 0 for admin off.
	Port, AdminPort int
	// Global, when set, is the body of the global option
	// apikey { redis { … } } (e.g. "address 127.0.0.1:6379").
	Global string
	// KeyFile, when set, is the route's key file; else KeysRedis, the
	// address(es) of keys redis (timeout 2s), or "global" for a plain
	// `keys redis` that uses the global option.
	KeyFile, KeysRedis string
	// CountersFile, when set, is the file of counters in memory.
	CountersFile string
	// CountersRedis is the address(es) of counters redis, with
	// CountersOptions in its block (e.g. "timeout 2s"), or "global" for a
	// plain `counters redis`.
	CountersRedis, CountersOptions string
	// Apikey holds more lines of the apikey block (e.g. "failed_auth_limit
	// off").
	Apikey string
	// Handler follows apikey in the site; "respond ok" when empty.
	Handler string
}

// Caddyfile is the site's Caddyfile.
func (s Site) Caddyfile() string {
	var b strings.Builder
	b.WriteString("{\n")
	if s.AdminPort == 0 {
		b.WriteString("\tadmin off\n")
	} else {
		fmt.Fprintf(&b, "\tadmin 127.0.0.1:%d\n", s.AdminPort)
	}
	b.WriteString("\tpersist_config off\n")
	if s.Global != "" {
		fmt.Fprintf(&b, "\tapikey {\n\t\tredis {\n%s\n\t\t}\n\t}\n", indent(s.Global, "\t\t\t"))
	}
	fmt.Fprintf(&b, "}\nhttp://127.0.0.1:%d {\n\tapikey {\n", s.Port)
	switch {
	case s.KeyFile != "":
		fmt.Fprintf(&b, "\t\tkeys file %s\n", s.KeyFile)
	case s.KeysRedis == "global":
		b.WriteString("\t\tkeys redis\n")
	default:
		fmt.Fprintf(&b, "\t\tkeys redis {\n\t\t\taddress %s\n\t\t\ttimeout 2s\n\t\t}\n", s.KeysRedis)
	}
	if s.Apikey != "" {
		b.WriteString(indent(s.Apikey, "\t\t") + "\n")
	}
	switch {
	case s.CountersFile != "":
		fmt.Fprintf(&b, "\t\tcounters memory {\n\t\t\tfile %s\n\t\t}\n", s.CountersFile)
	case s.CountersRedis == "":
	case s.CountersRedis == "global":
		b.WriteString("\t\tcounters redis\n")
	default:
		fmt.Fprintf(&b, "\t\tcounters redis {\n\t\t\taddress %s\n%s\n\t\t}\n", s.CountersRedis, indent(s.CountersOptions, "\t\t\t"))
	}
	handler := s.Handler
	if handler == "" {
		handler = "respond ok"
	}
	fmt.Fprintf(&b, "\t}\n\t%s\n}\n", handler)
	return b.String()
}

// indent puts prefix before every line of text.
func indent(text, prefix string) string {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i, l := range lines {
		lines[i] = prefix + strings.TrimSpace(l)
	}
	return strings.Join(lines, "\n")
}
