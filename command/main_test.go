package command_test

import (
	"testing"

	_ "github.com/moodmnky/caddy-apikey"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestMain keeps Caddy and the commands out of the real HOME; the
// commands are tested as users run them, from the built binary
// (gatewaytest.CaddyBinary: cmd/caddy, Caddy with the plugin).
func TestMain(m *testing.M) { gatewaytest.Main(m) }
