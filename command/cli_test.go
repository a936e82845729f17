package command_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// The commands are tested as users run them: the built binary (cmd/caddy,
// Caddy with the plugin), built once per test run.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// builtCaddy is the path of cmd/caddy built for this run.
func builtCaddy(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "caddy-apikey-cli-")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "caddy")
		out, err := exec.Command("go", "build", "-o", built.path, "github.com/moodmnky/caddy-apikey/cmd/caddy").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// cli runs `caddy apikey ...` from the built binary.
func cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(builtCaddy(t), append([]string{"apikey"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// newKeyByCLI runs `caddy apikey new` and returns the printed key.
func newKeyByCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, "", append([]string{"new"}, args...)...)
	if code != 0 {
		t.Fatalf("apikey new: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("apikey new printed %d lines on stdout, want the key alone", len(lines))
	}
	if _, ok := keystore.Check(lines[0]); !ok {
		t.Fatal("apikey new printed something that is not a valid key")
	}
	if !strings.Contains(errOut, "shown once") {
		t.Errorf("stderr does not say the key is shown once: %q", errOut)
	}
	return lines[0]
}
