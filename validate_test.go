package apikey

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/usage"
)

// validateConfig runs the built binary's caddy validate on a Caddyfile, with
// HOME and the XDG folders in dataHome, and fails the test if it does not
// pass.
func validateConfig(t *testing.T, caddyfile, dataHome string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gatewaytest.CaddyBinary(t), "validate", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dataHome, "XDG_DATA_HOME="+dataHome, "XDG_CONFIG_HOME="+dataHome)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
}

// folderState describes every file under dir (path, size, mode, time and
// a hash of the content), to compare before and after.
func folderState(t *testing.T, dir string) map[string]string {
	t.Helper()
	state := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %s", info.Mode(), info.Size(), info.ModTime().Format(time.RFC3339Nano))
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:8])
		}
		rel, _ := filepath.Rel(dir, path)
		state[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return state
}

func sameState(t *testing.T, before, after map[string]string) {
	t.Helper()
	for name, desc := range after {
		if before[name] != desc {
			if before[name] == "" {
				t.Errorf("caddy validate created %s", name)
			} else {
				t.Errorf("caddy validate changed %s: %s, was %s", name, desc, before[name])
			}
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			t.Errorf("caddy validate removed (or renamed) %s", name)
		}
	}
}

// TestValidateWritesNothing: caddy validate provisions every module of the
// config, and must not write the running instance's files: the counters
// and usage files in the data folder (missing, good or corrupt), nor the
// audit log.
func TestValidateWritesNothing(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_validate", Role: "reader", Services: []string{"*"}})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	caddyfile := func(dataHome string) string {
		return fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		quota dev 100/day
		audit_log %s
	}
	respond ok
}`, gatewaytest.Port(t), keyFile, filepath.Join(dataHome, "audit.log"))
	}

	t.Run("empty data folder", func(t *testing.T) {
		dataHome := t.TempDir()
		validateConfig(t, caddyfile(dataHome), dataHome)
		if after := folderState(t, dataHome); len(after) > 1 { // the folder itself
			sameState(t, map[string]string{".": after["."]}, after)
		}
	})

	t.Run("files of a running instance", func(t *testing.T) {
		dataHome := t.TempDir()
		dir := filepath.Join(dataHome, "caddy", "apikey")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// A usage file as a running instance saved it, and a counter file
		// that does not parse (which a run sets aside).
		counts := usage.New()
		counts.Add("k_validate", "ollama", "GET", "/api/tags", time.Now())
		if err := counts.Save(filepath.Join(dir, "usage.json")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "counters.json"), []byte(`{"version": 1, "counters": `), 0o600); err != nil {
			t.Fatal(err)
		}
		past := time.Now().Add(-time.Hour)
		for _, name := range []string{"usage.json", "counters.json"} {
			if err := os.Chtimes(filepath.Join(dir, name), past, past); err != nil {
				t.Fatal(err)
			}
		}
		before := folderState(t, dataHome)
		validateConfig(t, caddyfile(dataHome), dataHome)
		sameState(t, before, folderState(t, dataHome))
	})
}

// TestValidateSendsNothingToRedis: a usage file holding counts not yet
// added to the cluster's Redis belongs to the running instance, which
// sends them; caddy validate of a config with counters on that Redis must
// neither send them nor save the file.
func TestValidateSendsNothingToRedis(t *testing.T) {
	srv := redistest.Start(t)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_validate", Role: "reader", Services: []string{"*"}})
	dataHome := t.TempDir()
	usageFile := filepath.Join(dataHome, "usage.json")
	counts, outbox := usage.New(), usage.NewOutbox()
	counts.Add("k_validate", "ollama", "GET", "/api/tags", time.Now())
	outbox.Take(counts, true, time.Now().Add(-time.Hour))
	if err := outbox.Save(usageFile); err != nil {
		t.Fatal(err)
	}
	if !outbox.Waiting() {
		t.Fatal("the usage file holds no counts waiting for Redis")
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(usageFile, past, past); err != nil {
		t.Fatal(err)
	}
	before := folderState(t, dataHome)
	validateConfig(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		quota dev 100/day
		counters redis {
			address %s
		}
		usage_file %s
	}
	respond ok
}`, gatewaytest.Port(t), gatewaytest.WriteKeyFile(t, key.Record), srv.Addr(), usageFile), dataHome)
	sameState(t, before, folderState(t, dataHome))
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		t.Errorf("caddy validate wrote to Redis: %s", strings.Join(keys, ", "))
	}
}
