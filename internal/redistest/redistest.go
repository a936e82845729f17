// Package redistest starts a real redis-server on a free loopback port for
// tests.
package redistest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/testtools"
)

// RequireEnv, when set, turns a missing redis-server from a skip into a
// failure; .ci/run sets it, so CI cannot pass without the Redis tests.
const RequireEnv = "APIKEY_REQUIRE_REDIS"

// Server is a redis-server process the test owns.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	Port int
	cmd  *exec.Cmd
	args []string // persistence settings, replacing the default of none
}

// Start runs redis-server on a free port until the test ends.
func Start(t testing.TB) *Server { return StartWith(t) }

// StartWith is Start with persistence settings, e.g. "--appendonly",
// "yes", "--appendfsync", "always"; they are kept across Restart, and the
// data folder too.
func StartWith(t testing.TB, persistence ...string) *Server {
	t.Helper()
	bin := testtools.Require(t, "redis-server", RequireEnv, "install Debian's redis-server package")
	port := claimPort(t)
	s := &Server{t: t, bin: bin, dir: t.TempDir(), Port: port, args: persistence}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Restart starts the server again on the same port: empty, unless it was
// started with persistence settings.
func (s *Server) Restart() {
	s.t.Helper()
	persistence := s.args
	if len(persistence) == 0 {
		persistence = []string{"--save", "", "--appendonly", "no"}
	}
	args := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"), "--protected-mode", "no"}, persistence...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond); err == nil {
			c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server did not answer on %s:\n%s", s.Addr(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the server at once, as a crash would.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a stopped process must wake to die
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Freeze stops the process without closing its connections: calls hang,
// as with a server that is overloaded or behind a broken network.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		s.t.Fatal("redis-server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(fmt.Errorf("signalling redis-server: %w", err))
	}
}

// Cluster is a Redis Cluster of real redis-server processes the test owns.
type Cluster struct {
	Nodes []*Server
}

// Addrs are the nodes' host:port, as a client's seed list.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// StartCluster runs n masters (at least 3) with cluster mode on, joins them
// into one cluster with redis-cli, and waits until every slot is served.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	cli := testtools.Require(t, "redis-cli", RequireEnv, "install Debian's redis-tools package (it comes with redis-server)")
	c := &Cluster{}
	for range n {
		c.Nodes = append(c.Nodes, StartWith(t, "--save", "", "--appendonly", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, node := range c.Nodes {
			out, _ := exec.Command(cli, "-p", strconv.Itoa(node.Port), "cluster", "info").Output()
			ok = ok && strings.Contains(string(out), "cluster_state:ok")
		}
		if ok {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal("the cluster did not reach cluster_state:ok")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Sentinel is a redis-server in sentinel mode that watches one master.
type Sentinel struct {
	Port int
	cmd  *exec.Cmd
}

// Addr is host:port.
func (s *Sentinel) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// StartSentinel runs a sentinel that watches master under name, and waits
// until it reports the master.
func StartSentinel(t testing.TB, master *Server, name string) *Sentinel {
	t.Helper()
	bin := testtools.Require(t, "redis-server", RequireEnv, "install Debian's redis-server package")
	port := claimPort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 1000\n",
		port, dir, name, master.Port, name)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Sentinel{Port: port, cmd: exec.Command(bin, conf, "--sentinel")}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting redis sentinel: %v", err)
	}
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	cli := testtools.Require(t, "redis-cli", RequireEnv, "install Debian's redis-tools package")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command(cli, "-p", strconv.Itoa(port), "sentinel", "get-master-addr-by-name", name).Output()
		if strings.Contains(string(out), strconv.Itoa(master.Port)) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinel did not report master %s", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// claimPort picks a loopback port for a redis-server that nothing else
// takes meanwhile. redis-server binds its port itself, so the port cannot
// be held and handed over; instead it is chosen below the kernel's
// ephemeral range (32768 and up on Linux), where no listener on port 0 and
// no outgoing connection is given a port, with its cluster bus port (10000
// above) there too; claimed with an exclusive lock file, held until the
// test ends, against the other test processes of this project (go test
// runs packages in parallel); and checked free to bind.
func claimPort(t testing.TB) int {
	t.Helper()
	for range 500 {
		port := 12000 + rand.IntN(10000)
		lock, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("caddy-apikey-redistest-%d.lock", port)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			continue
		}
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil || !bindable(port) || !bindable(port+10000) {
			lock.Close()
			continue
		}
		t.Cleanup(func() { lock.Close() }) // after the server's Kill, registered later
		return port
	}
	t.Fatal("no loopback port for redis-server in 12000-21999")
	return 0
}

func bindable(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
