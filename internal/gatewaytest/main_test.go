package gatewaytest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func TestMain(m *testing.M) { Main(m) }

// TestCaddyStaysOutOfHome loads and stops a config, as every Caddy test
// does, and checks that Caddy's autosave and storage paths are in the
// temporary folder, that the autosave landed there, and that nothing under
// the real HOME's Caddy folders mentions this test's config or this
// process's instance id (other Caddy processes may write there meanwhile).
func TestCaddyStaysOutOfHome(t *testing.T) {
	for name, p := range map[string]string{
		"caddy.ConfigAutosavePath": caddy.ConfigAutosavePath,
		"caddy.DefaultStorage":     caddy.DefaultStorage.Path,
		"caddy.AppDataDir()":       caddy.AppDataDir(),
		"caddy.AppConfigDir()":     caddy.AppConfigDir(),
	} {
		if rel, err := filepath.Rel(Home(), p); err != nil || !filepath.IsLocal(rel) {
			t.Errorf("%s is %s, outside the tests' folder %s", name, p, Home())
		}
	}
	port := Port(t)
	marker := fmt.Sprintf("home-test-%d-%d", port, time.Now().UnixNano())
	Start(t, fmt.Sprintf("{\n\tadmin off\n}\nhttp://127.0.0.1:%d {\n\trespond %s\n}\n", port, marker))
	if err := Stop(); err != nil {
		t.Fatal(err)
	}
	if saved, err := os.ReadFile(caddy.ConfigAutosavePath); err != nil || !strings.Contains(string(saved), marker) {
		t.Errorf("the config was not autosaved in the tests' folder (%v), so the check below proves nothing", err)
	}
	id, err := caddy.InstanceID()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range realCaddyDirs {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil // a folder that does not exist was not written to
			}
			data, _ := os.ReadFile(path)
			if strings.Contains(string(data), marker) || strings.Contains(string(data), id.String()) {
				t.Errorf("the tests wrote %s, under the real HOME", path)
			}
			return nil
		})
	}
}
