package keyservice

import (
	"context"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

func caddyContext() caddy.Context {
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	return ctx
}

var (
	// hexRun is what a SHA-256 looks like in hex.
	hexRun = regexp.MustCompile(`[0-9a-f]{64}`)
	// hashField is a "hash" field with a well-formed value.
	hashField = regexp.MustCompile(`"hash"\s*:\s*"sha256:[0-9a-f]{64}"`)
)

// hashesOnlyInHashFields reports whether every 64-hex-digit run of input
// stands as the value of a "hash" field, written plainly.
func hashesOnlyInHashFields(input string) bool {
	if strings.Contains(input, `\`) {
		return false
	}
	plain := hashField.ReplaceAllString(input, "")
	return !hexRun.MatchString(strings.ToLower(plain))
}
