package admin_test

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard" // handle_path, respond, reverse_proxy, …
	_ "github.com/moodmnky/caddy-apikey"                 // the apikey modules
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestMain keeps the Caddy instances the tests start out of the real HOME.
func TestMain(m *testing.M) { gatewaytest.Main(m) }
