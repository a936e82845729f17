package apikey

import (
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestMain keeps the Caddy instances the tests start out of the real HOME.
func TestMain(m *testing.M) { gatewaytest.Main(m) }
