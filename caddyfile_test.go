package apikey

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

var update = flag.Bool("update", false, "rewrite the expected output of the adapt tests")

const adaptSeparator = "----------\n"

// readAdaptCase splits a test file into the Caddyfile and what is expected of it.
func readAdaptCase(t *testing.T, path string) (caddyfile, expected string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	in, out, ok := strings.Cut(string(data), adaptSeparator)
	if !ok {
		t.Fatalf("%s: no %q line between the Caddyfile and the expected output", path, strings.TrimSpace(adaptSeparator))
	}
	return in, strings.TrimSpace(out)
}

func writeAdaptCase(t *testing.T, path, caddyfile, expected string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(caddyfile+adaptSeparator+expected+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCaddyfileAdapt adapts every testdata/adapt case and compares the JSON.
func TestCaddyfileAdapt(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.txt")
	if len(files) == 0 {
		t.Fatal("no adapt cases found")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			in, expected := readAdaptCase(t, path)
			if *update {
				cfg, err := gatewaytest.Adapt(in)
				if err != nil {
					t.Fatal(err)
				}
				var pretty bytes.Buffer
				_ = json.Indent(&pretty, cfg, "", "\t")
				writeAdaptCase(t, path, in, pretty.String())
				return
			}
			if !caddytest.CompareAdapt(t, path, in, "caddyfile", expected) {
				t.Fail()
			}
		})
	}
}

// TestCaddyfileErrors checks that each bad Caddyfile in testdata/adapt_errors
// fails with the expected message, which names the line.
func TestCaddyfileErrors(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt_errors/*.txt")
	if len(files) == 0 {
		t.Fatal("no error cases found")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			in, expected := readAdaptCase(t, path)
			_, err := gatewaytest.Adapt(in)
			if err == nil {
				t.Fatalf("adapting succeeded; want error %q", expected)
			}
			if *update {
				writeAdaptCase(t, path, in, err.Error())
				return
			}
			if err.Error() != expected {
				t.Errorf("error:\n got: %s\nwant: %s", err, expected)
			}
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Errorf("error %q does not name the line", err)
			}
		})
	}
}

// adaptJSON adapts a Caddyfile into a JSON document a test can change.
func adaptJSON(t *testing.T, caddyfile string) map[string]any {
	t.Helper()
	cfg, err := gatewaytest.Adapt(caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestRunsBeforeRespondWithoutOrder: with no "order" line, apikey guards a
// site whose only other handler is respond.
func TestRunsBeforeRespondWithoutOrder(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_any", Role: "reader"})
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	respond "secret content"
	apikey {
		keys file %s
	}
}`, port, gatewaytest.WriteKeyFile(t, key.Record)))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if r := gatewaytest.Send(t, "GET", url); r.Status != 401 || strings.Contains(r.Body, "secret content") {
		t.Fatalf("without a key: %d %q", r.Status, r.Body)
	}
	if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Status != 200 || r.Body != "secret content" {
		t.Fatalf("with a key: %d %q", r.Status, r.Body)
	}
}
