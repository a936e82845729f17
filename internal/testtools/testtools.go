// Package testtools finds the outside programs some tests need (redis-server,
// node, chromium) and, when one is missing, skips those tests with one line
// that is visible without -v, or fails them when an environment variable
// says the program is required (as CI does).
package testtools

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	mu        sync.Mutex
	announced = map[string]bool{}
)

// Require returns the path of tool (or of the first of alternatives found,
// e.g. "chromium-browser" for "chromium") in PATH. When none is found, the
// test fails if envVar is set, and is skipped otherwise; hint says how to
// install the tool, e.g. "apt-get install redis-server".
//
// The first skip for a tool in a test binary also prints one line naming the
// package, the tool and envVar. `go test ./...` shows nothing a passing
// package printed, so the line goes to the terminal (/dev/tty) when there is
// one, else to stderr (shown with -v, or in `go test` run in the package's
// folder).
func Require(t testing.TB, tool, envVar, hint string, alternatives ...string) string {
	t.Helper()
	var lookErr error
	for _, name := range append([]string{tool}, alternatives...) {
		path, err := exec.LookPath(name)
		if err == nil {
			return path
		}
		if lookErr == nil {
			lookErr = err
		}
	}
	if os.Getenv(envVar) != "" {
		t.Fatalf("%s not found and %s is set: %v (%s)", tool, envVar, lookErr, hint)
	}
	Missing(t, tool, envVar, fmt.Sprintf("%s is not in PATH (%s)", tool, hint))
	return ""
}

// Missing skips a test that needs what (a program, packages, a service)
// because of why, with the same one line as Require, or fails it when envVar
// is set. Use it for what Require cannot look up in PATH, e.g. npm packages.
func Missing(t testing.TB, what, envVar, why string) {
	t.Helper()
	if os.Getenv(envVar) != "" {
		t.Fatalf("%s and %s is set", why, envVar)
	}
	why += fmt.Sprintf("; set %s=1 to make this a failure", envVar)
	announce(what, fmt.Sprintf("SKIP %s: tests that need %s are skipped (first: %s): %s\n", pkgName(), what, t.Name(), why))
	t.Skip(why)
}

// announce prints line once per tool and test binary.
func announce(tool, line string) {
	mu.Lock()
	defer mu.Unlock()
	if announced[tool] {
		return
	}
	announced[tool] = true
	var w io.Writer = os.Stderr
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		w = tty
	}
	io.WriteString(w, line)
	uncacheable()
}

// uncacheable keeps go test from caching this run's result. A cached result
// would be replayed without the line, and would stay "ok" after the tool is
// installed: nothing the go command watches (the source, the environment,
// files in the module) changes then. The go command rechecks the folders a
// test changed into, and the temporary folder changes with every go command
// (each makes its work folder there), so a visit to it and straight back
// makes the result uncacheable. No test in this project runs in parallel,
// and nothing else resolves a relative path in that moment.
func uncacheable() {
	wd, err := os.Getwd()
	if err != nil {
		return
	}
	if os.Chdir(os.TempDir()) == nil {
		if err := os.Chdir(wd); err != nil {
			panic(fmt.Sprintf("testtools: cannot change back to %s: %v", wd, err))
		}
	}
}

// pkgName is the package under test, from the test binary's name
// ("ratelimit.test").
func pkgName() string {
	return strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
}
