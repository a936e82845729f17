package gatewaytest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// caddyPackage is the Caddy with this module's plugins, which CaddyBinary
// builds.
const caddyPackage = "github.com/moodmnky/caddy-apikey/cmd/caddy"

var caddyBinary struct {
	sync.Once
	path string
	err  error
}

// CaddyBinary builds cmd/caddy and returns its path. The test processes of
// one `go test ./...` share one build: it goes to a folder of the temporary
// directory named by a hash of the module's sources, built by the first
// process under a file lock, so each package does not link its own.
func CaddyBinary(t testing.TB) string {
	t.Helper()
	caddyBinary.Do(func() { caddyBinary.path, caddyBinary.err = buildCaddy() })
	if caddyBinary.err != nil {
		t.Fatal(caddyBinary.err)
	}
	return caddyBinary.path
}

// binaryCache is where CaddyBinary keeps its builds, one folder a version
// of the sources; folders of other versions older than a day are removed.
var binaryCache = filepath.Join(os.TempDir(), "caddy-apikey-bin")

func buildCaddy() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	sum, err := sourcesSum(root)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(binaryCache, sum)
	path := filepath.Join(dir, "caddy")
	unlock, err := flock.Lock(path)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	pruneBinaries(sum)
	tmp := path + ".building"
	cmd := exec.Command("go", "build", "-o", tmp, caddyPackage)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", caddyPackage, err, out)
	}
	return path, os.Rename(tmp, path)
}

// moduleRoot is the folder of this module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// sourcesSum hashes what the binary is built from (see builtFrom), by
// path and content: a changed portal template is a new binary, as a
// changed Go file is.
func sourcesSum(root string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !builtFrom(name) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%s %d\n", rel, len(data))
		h.Write(data)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

// builtFrom tells whether a file named name may be in the build: Go
// sources but tests, the module files, and what the portal embeds (its
// templates, stylesheet and script).
func builtFrom(name string) bool {
	switch filepath.Ext(name) {
	case ".go":
		return !strings.HasSuffix(name, "_test.go")
	case ".html", ".css", ".js":
		return true
	}
	return name == "go.mod" || name == "go.sum"
}

// ParallelWhenShort lets a test whose Caddys are all processes of their
// own (StartProcess) run beside others like it under -short, where the
// wall time is what counts; one that starts Caddy in the test binary must
// not call it (one Caddy config a process). The full suite runs them one
// after another, as it was measured under load.
func ParallelWhenShort(t *testing.T) {
	if testing.Short() {
		t.Parallel()
	}
}

// pruneBinaries removes the builds of other sources not used for a day.
func pruneBinaries(keep string) {
	entries, _ := os.ReadDir(binaryCache)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && e.Name() != keep && time.Since(info.ModTime()) > 24*time.Hour {
			os.RemoveAll(filepath.Join(binaryCache, e.Name()))
		}
	}
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
