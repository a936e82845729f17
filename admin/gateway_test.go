package admin_test

import (
	"strings"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// leaks reports whether text holds a key, a tell-tale part of it, or its
// hash, in any case.
func leaks(text string, k gatewaytest.Key) bool {
	lower := strings.ToLower(text)
	hash := strings.TrimPrefix(k.Record.Hash, "sha256:")
	return strings.Contains(lower, strings.ToLower(k.Secret[len(k.Secret)-16:])) || strings.Contains(lower, hash[:16])
}
