package usage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUsageFileFromANewerVersion: a usage file a newer caddy-apikey wrote
// (a higher format, fields this version does not know) is refused with an
// error that says so, not as a parse error.
func TestUsageFileFromANewerVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.json")
	if err := os.WriteFile(path, []byte(`{"version": 4, "counts": [], "models": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := New().Load(path, time.Now())
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "newer caddy-apikey (file format 4; this version reads formats 1 to 3)") {
		t.Fatalf("error %v, want one that names the newer format", err)
	}
}
