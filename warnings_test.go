package apikey

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestProvisionWarnings: a server whose access log (and error log) would
// write a key header in full, and one whose trusted proxies are not strict,
// are warned about once when the config loads, naming what to add.
func TestProvisionWarnings(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_warn", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	for _, c := range []struct {
		name, global, site string
		want, notWant      []string
	}{
		{"access log, default key headers", "", "log", []string{"access log writes request headers", "error log writes request headers"}, []string{"trusted_proxies_strict"}},
		{"access log, Authorization only", "", "log\n\tkey_from_note", nil, []string{"format filter", "trusted_proxies_strict"}},
		{"loose trusted proxies", "servers {\n\t\ttrusted_proxies static private_ranges\n\t}", "", []string{"set trusted_proxies_strict"}, []string{"access log writes"}},
		{"strict trusted proxies", "servers {\n\t\ttrusted_proxies static private_ranges\n\t\ttrusted_proxies_strict\n\t}", "", nil, []string{"trusted_proxies_strict"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "caddy.log")
			keyFrom := ""
			site := c.site
			if strings.Contains(site, "key_from_note") {
				site, keyFrom = "log", "key_from header Authorization Bearer"
			}
			gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[1]s
	}
	%[2]s
}
http://127.0.0.1:%[3]d {
	%[4]s
	handle /a/* {
		apikey {
			keys file %[5]s
			%[6]s
		}
		respond ok
	}
	handle /b/* {
		apikey {
			keys file %[5]s
			%[6]s
		}
		respond ok
	}
}`, logPath, c.global, gatewaytest.Port(t), site, keyFile, keyFrom))
			gatewaytest.Stop()
			data, _ := os.ReadFile(logPath)
			log := string(data)
			for _, w := range c.want {
				if n := strings.Count(log, w); n != 1 {
					t.Errorf("%q in %d warnings, want 1:\n%s", w, n, log)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(log, w) {
					t.Errorf("an unwarranted warning names %q", w)
				}
			}
		})
	}
}
