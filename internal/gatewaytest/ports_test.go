package gatewaytest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// site is a Caddyfile with an admin endpoint and one site answering text.
func site(adminPort, port int, text string) string {
	return fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n}\nhttp://127.0.0.1:%d {\n\trespond %q\n}\n", adminPort, port, text)
}

// TestPortHandedOver: the site and the admin endpoint are served from the
// sockets Port holds (Caddy listens on no port of its own), through
// reloads that change the site and a stop and start; the admin endpoint
// checks origins as on a port; after the test the port is closed.
func TestPortHandedOver(t *testing.T) {
	var port int
	t.Run("served", func(t *testing.T) {
		port = Port(t)
		adminPort := Port(t)
		base, admin := fmt.Sprintf("http://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", adminPort)
		Start(t, site(adminPort, port, "one"))
		for i, text := range []string{"two", "three", "four"} {
			if r := Send(t, "GET", base+"/"); r.Status != 200 || r.Body != []string{"one", "two", "three"}[i] {
				t.Fatalf("before reload %d: %d %q", i, r.Status, r.Body)
			}
			// The old listener must not be the only one: a burst right after
			// a reload is answered by the new config.
			if err := Load(site(adminPort, port, text)); err != nil {
				t.Fatal(err)
			}
			codes := Tally(Burst(20, func(int) *http.Request { r, _ := http.NewRequest("GET", base+"/", nil); return r }))
			if codes[200] != 20 {
				t.Fatalf("after reload %d: %v", i, codes)
			}
		}
		if err := Stop(); err != nil {
			t.Fatal(err)
		}
		Start(t, site(adminPort, port, "again"))
		if r := Send(t, "GET", base+"/"); r.Body != "again" {
			t.Fatalf("after a stop and start: %d %q", r.Status, r.Body)
		}
		if code, body := Admin(t, "GET", admin, "/config/"); code != 200 || !strings.Contains(body, "again") {
			t.Errorf("admin GET /config/: %d %s", code, body)
		}
		req, _ := http.NewRequest("GET", admin+"/config/", nil)
		req.Header.Set("Origin", "http://evil.example")
		resp, err := Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("admin with a foreign Origin: %d, want 403", resp.StatusCode)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("port %d still accepts connections after its test ended", port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClosedPort: a connection to a ClosedPort is refused at once.
func TestClosedPort(t *testing.T) {
	port := ClosedPort(t)
	start := time.Now()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("a connection to a closed port was accepted")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialing a closed port after %v: %v, want connection refused", time.Since(start), err)
	}
}
