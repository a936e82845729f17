package gatewaytest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// caddyPackage is the Caddy with this module's plugins, which CaddyBinary
// builds.
const caddyPackage = "github.com/moodmnky/caddy-apikey/cmd/caddy"

var caddyBinary struct {
	sync.Once
	path string
	err  error
}

// CaddyBinary builds cmd/caddy once per test process and returns its path.
func CaddyBinary(t testing.TB) string {
	t.Helper()
	caddyBinary.Do(func() {
		dir, err := os.MkdirTemp("", "caddy-apikey-bin-")
		if err != nil {
			caddyBinary.err = err
			return
		}
		caddyBinary.path = filepath.Join(dir, "caddy")
		out, err := exec.Command("go", "build", "-o", caddyBinary.path, caddyPackage).CombinedOutput()
		if err != nil {
			caddyBinary.err = fmt.Errorf("go build %s: %v\n%s", caddyPackage, err, out)
		}
	})
	if caddyBinary.err != nil {
		t.Fatal(caddyBinary.err)
	}
	return caddyBinary.path
}

// StartProcess runs CaddyBinary on a Caddyfile, in the test's working
// folder, with env added to the environment (the Caddyfile may use
// {$NAME}), until the test ends, and returns once Caddy serves the config.
// Addresses on ports from Port are served from the held sockets, handed to
// the process as inherited descriptors, so a process restarted on a port
// keeps it. HOME and the XDG folders point into a folder of the test. When
// the test fails, its log shows the last lines of Caddy's log.
func StartProcess(t testing.TB, caddyfile string, env ...string) *exec.Cmd {
	t.Helper()
	dir := t.TempDir()
	env = append(append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir), env...)
	bin := CaddyBinary(t)
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	adapt := exec.Command(bin, "adapt", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile")
	adapt.Env = env
	var stderr bytes.Buffer
	adapt.Stderr = &stderr
	cfg, err := adapt.Output()
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, stderr.Bytes())
	}
	var files []*os.File
	cfg, err = rewriteListen(cfg, func(fd int) string {
		dup, err := syscall.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(dup), "port"))
		return "fd/" + strconv.Itoa(2+len(files)) // ExtraFiles start at 3
	})
	defer func() {
		for _, f := range files {
			f.Close() // the process has its own copies
		}
	}()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Env = env
	cmd.ExtraFiles = files
	logPath := filepath.Join(dir, "caddy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait() // the test may have waited already
		logFile.Close()
		if t.Failed() {
			// The end of Caddy's log, without lines that could hold a
			// key: Caddy's own DEBUG lines are off in these configs.
			log, _ := os.ReadFile(logPath)
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			t.Logf("the last lines of the Caddy in %s:\n%s", dir, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		log, _ := os.ReadFile(logPath)
		if bytes.Contains(log, []byte("serving initial configuration")) {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
