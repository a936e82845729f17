// Package gatewaytest is the one harness of the tests that run Caddy: it
// keeps Caddy out of the real HOME (Main), starts a Caddy from a Caddyfile
// in the test process on ports that cannot race (Port, Start, Load), runs
// real upstreams that record what they get (NewUpstream), makes keys and
// key files (NewKey, WriteKeyFile), and sends requests as a client would
// (Client, Send, Burst, Admin).
//
// It does not import the apikey module: tests in other packages blank-import
// github.com/moodmnky/caddy-apikey to get its modules, and the root's own
// tests use it too.
//
// Tests that start Caddy must not run in parallel: there is one running
// config per process.
package gatewaytest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// Main is the TestMain of a package whose tests start Caddy. It points HOME
// and the XDG folders at a temporary folder, and Caddy's autosave path and
// default storage into it, so that no test writes into the real ones; it
// pins GOCACHE and GOPATH first, so that a go command the tests run (to
// build cmd/caddy) keeps its warm caches. Then it runs the tests, then
// each of after (what the tests shared, such as browsertest.Stop), and
// exits.
func Main(m *testing.M, after ...func()) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "caddy-apikey-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if os.Getenv("GOCACHE") == "" {
		if cache, err := os.UserCacheDir(); err == nil {
			os.Setenv("GOCACHE", filepath.Join(cache, "go-build"))
		}
	}
	if os.Getenv("GOPATH") == "" {
		if home, err := os.UserHomeDir(); err == nil {
			os.Setenv("GOPATH", filepath.Join(home, "go"))
		}
	}
	// Caddy computed its autosave path and default storage from HOME and
	// the XDG folders when its package was initialized, before this ran:
	// remember them (the harness's own test checks they stay untouched),
	// then point them into the temporary folder too.
	realCaddyDirs = []string{filepath.Dir(caddy.ConfigAutosavePath), caddy.DefaultStorage.Path}
	home = dir
	for _, v := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"} {
		os.Setenv(v, filepath.Join(dir, strings.ToLower(v)))
	}
	caddy.ConfigAutosavePath = filepath.Join(caddy.AppConfigDir(), "autosave.json")
	caddy.DefaultStorage.Path = caddy.AppDataDir()
	code := m.Run()
	for _, f := range after {
		f()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// home is the temporary folder Main points HOME and the XDG folders at;
// realCaddyDirs are the folders Caddy would have written to without it.
var (
	home          string
	realCaddyDirs []string
)

// Home is the temporary folder Main pointed HOME and the XDG folders at;
// empty when Main did not run.
func Home() string { return home }
