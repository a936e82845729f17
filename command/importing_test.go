package command_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestCLIImportOfAnEndlessFile: import /dev/zero ends with an error naming
// the file and the cap, having held no more than the cap.
func TestCLIImportOfAnEndlessFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewaytest.CaddyBinary(t), "apikey", "import", "/dev/zero", "--redis", "127.0.0.1:1")
	var errOut strings.Builder
	cmd.Stderr = &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatal("import /dev/zero did not end within 2 minutes")
	}
	if err == nil {
		t.Fatal("import /dev/zero: exit 0")
	}
	if !strings.Contains(errOut.String(), "/dev/zero") || !strings.Contains(errOut.String(), capped.Size(capped.KeyFile)) {
		t.Errorf("import /dev/zero: the message does not name the file and the cap: %q", errOut.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		t.Logf("peak RSS %d MiB", ru.Maxrss>>10)
		if ru.Maxrss > 1<<20 { // KiB: 1 GiB
			t.Errorf("import /dev/zero held %d MiB", ru.Maxrss>>10)
		}
	}
}

// TestExportImport: a key file imported into Redis (dry run first, which
// writes nothing), imported again (nothing changes), changed and imported
// (one update), exported back to the same records; an import that would
// give one hash to two keys is refused and leaves Redis as it was.
func TestExportImport(t *testing.T) {
	srv := redistest.Start(t)
	a := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_imp_a", Type: "dev", Role: "reader", Services: []string{"ollama"}})
	b := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_imp_b", Type: "prod", Role: "writer", Owner: "bob"})
	file := gatewaytest.WriteKeyFile(t, a.Record, b.Record)

	run := func(args ...string) (string, string, int) {
		t.Helper()
		return gatewaytest.CLI(t, "", args...)
	}
	out, _, code := run("import", file, "--redis", srv.Addr(), "--dry-run")
	if code != 0 || !strings.Contains(out, "+ k_imp_a") || !strings.Contains(out, "+ k_imp_b") {
		t.Fatalf("dry run: %d %q", code, out)
	}
	if out, _, _ := run("list", "--redis", srv.Addr(), "--json"); strings.Contains(out, "k_imp_a") {
		t.Fatal("the dry run wrote to Redis")
	}
	if _, errOut, code := run("import", file, "--redis", srv.Addr()); code != 0 || !strings.Contains(errOut, "2 created, 0 updated, 0 unchanged") {
		t.Fatalf("import: %d %q", code, errOut)
	}
	if _, errOut, code := run("import", file, "--redis", srv.Addr()); code != 0 || !strings.Contains(errOut, "0 created, 0 updated, 2 unchanged") {
		t.Fatalf("second import: %d %q", code, errOut)
	}
	a.Record.Role = "writer"
	file = gatewaytest.WriteKeyFile(t, a.Record, b.Record)
	out, errOut, code := run("import", file, "--redis", srv.Addr())
	if code != 0 || !strings.Contains(out, "~ k_imp_a (role)") || !strings.Contains(errOut, "0 created, 1 updated, 1 unchanged") {
		t.Fatalf("changed import: %d %q %q", code, out, errOut)
	}

	exported := filepath.Join(t.TempDir(), "export.json")
	if _, errOut, code := run("export", "--redis", srv.Addr(), "--out", exported); code != 0 {
		t.Fatalf("export: %d %q", code, errOut)
	}
	data, _ := os.ReadFile(exported)
	records, err := keystore.ParseRecords(data)
	if err != nil || len(records) != 2 || records[0].Role != "writer" || records[1].Owner != "bob" || records[0].Hash != a.Record.Hash {
		t.Fatalf("export: %d records, %v", len(records), err)
	}

	// A record whose hash is k_imp_a's, under another id: refused whole.
	thief := b.Record
	thief.ID, thief.Hash = "k_imp_thief", a.Record.Hash
	fresh := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_imp_fresh", Type: "dev", Role: "reader"})
	bad := gatewaytest.WriteKeyFile(t, fresh.Record, thief)
	if _, errOut, code := run("import", bad, "--redis", srv.Addr()); code != 1 || !strings.Contains(errOut, "nothing was imported") {
		t.Fatalf("conflicting import: %d %q", code, errOut)
	}
	if out, _, _ := run("list", "--redis", srv.Addr(), "--json"); strings.Contains(out, "k_imp_fresh") || strings.Contains(out, "k_imp_thief") {
		t.Error("a refused import wrote part of itself")
	}

	// Two keys swapping secrets, beside another change: valid in the end,
	// impossible one record at a time, so refused before anything is
	// written.
	swapA, swapB := a.Record, b.Record
	swapA.Name, swapB.Name = "renamed", b.Record.Name
	swapA.Hash, swapB.Hash = b.Record.Hash, a.Record.Hash
	swap := gatewaytest.WriteKeyFile(t, swapA, swapB)
	if _, errOut, code := run("import", swap, "--redis", srv.Addr()); code != 1 || !strings.Contains(errOut, "nothing was imported") {
		t.Fatalf("swapping import: %d %q", code, errOut)
	}
	if out, _, _ := run("list", "--redis", srv.Addr(), "--json"); strings.Contains(out, "renamed") {
		t.Error("a refused import wrote part of itself")
	}
}

// writeGate is a TCP relay in front of a real Redis that holds every
// client's first write (a script call: EVALSHA or EVAL) until released:
// the moment an import has planned and starts to write. Reads pass.
type writeGate struct {
	ln       net.Listener
	held     chan struct{} // closed when a write is first held
	release  chan struct{} // closed to let writes through
	heldOnce sync.Once
}

func newWriteGate(t *testing.T, redisAddr string) *writeGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &writeGate{ln: ln, held: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go g.relay(c, redisAddr)
		}
	}()
	return g
}

func (g *writeGate) addr() string { return g.ln.Addr().String() }

func (g *writeGate) relay(c net.Conn, redisAddr string) {
	defer c.Close()
	up, err := net.Dial("tcp", redisAddr)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(c, up) }()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if bytes.Contains(bytes.ToLower(buf[:n]), []byte("eval")) {
				select {
				case <-g.release:
				default:
					g.heldOnce.Do(func() { close(g.held) })
					<-g.release
				}
			}
			if _, err := up.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestImportKeepsChangesMadeWhileItRuns: an import of 3,000 records into
// Redis has planned and is about to write when a revocation and a
// rotation land (the commands, run against the same Redis while the
// import's first write is held on the wire). The revocation is kept, with
// the rest of the planned change made over it; the rotated key is left as
// its rotation made it, and the import fails naming it. A later import
// does not un-revoke the key; only --unrevoke does.
func TestImportKeepsChangesMadeWhileItRuns(t *testing.T) {
	srv := redistest.Start(t)
	const n = 3000
	records := make([]keystore.Record, n)
	for i := range records {
		records[i] = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: fmt.Sprintf("k_imp_%04d", i), Type: "dev", Role: "reader",
			Name: "before", Services: []string{"*"}}).Record
	}
	if _, errOut, code := gatewaytest.CLI(t, "", "import", gatewaytest.WriteKeyFile(t, records...), "--redis", srv.Addr()); code != 0 {
		t.Fatalf("first import: exit %d: %s", code, errOut)
	}
	for i := range records {
		records[i].Name = "after"
	}
	file := gatewaytest.WriteKeyFile(t, records...)

	gate := newWriteGate(t, srv.Addr())
	cmd := exec.Command(gatewaytest.CaddyBinary(t), "apikey", "import", file, "--redis", gate.addr())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-gate.held:
	case err := <-done:
		t.Fatalf("the import ended before it wrote: %v: %s", err, errOut.String())
	case <-time.After(60 * time.Second):
		t.Fatal("the import did not start writing within 60s")
	}
	if _, e, code := gatewaytest.CLI(t, "", "revoke", "--redis", srv.Addr(), "--id", "k_imp_2998"); code != 0 {
		close(gate.release)
		t.Fatalf("revoke during the import: exit %d: %s", code, e)
	}
	rotated, e, code := gatewaytest.CLI(t, "", "rotate", "--redis", srv.Addr(), "--id", "k_imp_2997")
	close(gate.release)
	if code != 0 {
		t.Fatalf("rotate during the import: exit %d: %s", code, e)
	}
	rotatedHash := keystore.Sum(strings.TrimSpace(rotated)).Encode()
	var err error
	select {
	case err = <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("the import did not end within 120s")
	}
	if err == nil || !strings.Contains(errOut.String(), "k_imp_2997") || strings.Contains(errOut.String(), "k_imp_2998") {
		t.Errorf("the import must fail naming k_imp_2997 (changed while it ran), only: %v: %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "! k_imp_2998 was revoked while the import ran: kept revoked") {
		t.Errorf("the import does not say it kept k_imp_2998 revoked:\n%s", tail(out.String()))
	}

	stored := exportRedis(t, srv.Addr())
	if r := stored["k_imp_2998"]; !r.Revoked || r.Name != "after" {
		t.Errorf("k_imp_2998: revoked %v, name %q; want the revocation kept and the import's name", r.Revoked, r.Name)
	}
	if r := stored["k_imp_2997"]; r.Hash != rotatedHash || r.Name != "before" {
		t.Errorf("k_imp_2997: rotated hash kept %v, name %q; want it left as the rotation made it", r.Hash == rotatedHash, r.Name)
	}
	if r := stored["k_imp_2999"]; r.Revoked || r.Name != "after" {
		t.Errorf("k_imp_2999: revoked %v, name %q; want the import's change", r.Revoked, r.Name)
	}

	// The file, imported again, has k_imp_2998 unrevoked: it stays revoked
	// unless --unrevoke says otherwise.
	o, e, code := gatewaytest.CLI(t, "", "import", file, "--redis", srv.Addr())
	if code != 0 || !strings.Contains(o, "! k_imp_2998 stays revoked") {
		t.Fatalf("second import: exit %d: %s\n%s", code, e, tail(o))
	}
	if r := exportRedis(t, srv.Addr())["k_imp_2998"]; !r.Revoked {
		t.Fatal("a second import un-revoked k_imp_2998")
	}
	o, e, code = gatewaytest.CLI(t, "", "import", file, "--redis", srv.Addr(), "--unrevoke")
	if code != 0 || !strings.Contains(o, "~ k_imp_2998 (revoked)") {
		t.Fatalf("import --unrevoke: exit %d: %s\n%s", code, e, tail(o))
	}
	if r := exportRedis(t, srv.Addr())["k_imp_2998"]; r.Revoked {
		t.Fatal("import --unrevoke left k_imp_2998 revoked")
	}
}

// exportRedis reads every record of the store on Redis, by id.
func exportRedis(t *testing.T, addr string) map[string]keystore.Record {
	t.Helper()
	path := filepath.Join(t.TempDir(), "export.json")
	if _, errOut, code := gatewaytest.CLI(t, "", "export", "--redis", addr, "--out", path); code != 0 {
		t.Fatalf("export: exit %d: %s", code, errOut)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	records, err := keystore.ParseRecords(data)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]keystore.Record{}
	for _, r := range records {
		byID[r.ID] = r
	}
	return byID
}

// tail is the end of a long output, for a failure message.
func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}
