package apikey

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

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
	if _, errOut, code := cli(t, "", "import", gatewaytest.WriteKeyFile(t, records...), "--redis", srv.Addr()); code != 0 {
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
	if _, e, code := cli(t, "", "revoke", "--redis", srv.Addr(), "--id", "k_imp_2998"); code != 0 {
		close(gate.release)
		t.Fatalf("revoke during the import: exit %d: %s", code, e)
	}
	rotated, e, code := cli(t, "", "rotate", "--redis", srv.Addr(), "--id", "k_imp_2997")
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
	o, e, code := cli(t, "", "import", file, "--redis", srv.Addr())
	if code != 0 || !strings.Contains(o, "! k_imp_2998 stays revoked") {
		t.Fatalf("second import: exit %d: %s\n%s", code, e, tail(o))
	}
	if r := exportRedis(t, srv.Addr())["k_imp_2998"]; !r.Revoked {
		t.Fatal("a second import un-revoked k_imp_2998")
	}
	o, e, code = cli(t, "", "import", file, "--redis", srv.Addr(), "--unrevoke")
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
	if _, errOut, code := cli(t, "", "export", "--redis", addr, "--out", path); code != 0 {
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
