package portal_test

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard" // basic_auth, forward_auth, respond, …

	_ "github.com/moodmnky/caddy-apikey" // the apikey and apikey_portal modules

	"github.com/moodmnky/caddy-apikey/internal/browsertest"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestMain sets up what the Caddy tests need (gatewaytest.Main), and
// closes the browser the tests shared.
func TestMain(m *testing.M) { gatewaytest.Main(m, browsertest.Stop) }
