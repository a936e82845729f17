package gatewaytest

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// Port binds a loopback TCP socket, holds it, and returns its port. A
// config that Load, Start or StartProcess runs serves an address on that
// port ("127.0.0.1:port" or ":port", in a server's listen list or as the
// admin endpoint) from the held socket itself, handed to Caddy as "fd/N"
// (socket activation), so no other process can take the port between
// picking it and serving it, and a reload serves the same socket. Write
// Caddyfiles as usual, e.g. http://127.0.0.1:port.
//
// When the test ends the socket is closed, but its descriptor number stays
// taken (by /dev/null): Caddy keeps a file for every "fd/N" it has seen, so
// a number must never come back as another socket.
func Port(t testing.TB) int {
	t.Helper()
	fd, port, err := listenLoopback()
	if err != nil {
		t.Fatal(err)
	}
	held.Lock()
	held.fds[port] = fd
	held.Unlock()
	t.Cleanup(func() {
		held.Lock()
		delete(held.fds, port)
		held.Unlock()
		if err := retire(fd); err != nil {
			t.Errorf("closing the socket of port %d: %v", port, err)
		}
	})
	return port
}

// ClosedPort returns a loopback port that refuses connections until the
// test ends, for an upstream that is down: a socket is bound to it but not
// listening, so no other process can start listening there meanwhile.
func ClosedPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sa syscall.Sockaddr
	if err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
		sa, err = syscall.Getsockname(fd)
	}
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return sa.(*syscall.SockaddrInet4).Port
}

// listenLoopback opens a listening TCP socket on 127.0.0.1 and a port the
// kernel picks, as a bare descriptor: no Go file or poller owns it, so
// nothing but retire closes it.
func listenLoopback() (fd, port int, err error) {
	fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	if err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err == nil {
		if err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
			err = syscall.Listen(fd, syscall.SOMAXCONN)
		}
	}
	var sa syscall.Sockaddr
	if err == nil {
		sa, err = syscall.Getsockname(fd)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	return fd, sa.(*syscall.SockaddrInet4).Port, nil
}

// retire closes the socket at fd by putting /dev/null in its place.
func retire(fd int) error {
	devNull.Do(func() {
		devNull.fd, devNull.err = syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	})
	if devNull.err != nil {
		return devNull.err
	}
	return syscall.Dup3(devNull.fd, fd, syscall.O_CLOEXEC)
}

var devNull struct {
	sync.Once
	fd  int
	err error
}

// held maps the ports Port holds to their sockets' descriptors.
var held = struct {
	sync.Mutex
	fds map[int]int
}{fds: map[int]int{}}

// heldFD is the socket held for an address, if it is a TCP address on a
// held port.
func heldFD(addr string) (int, bool) {
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil || (na.Network != "" && na.Network != "tcp") || na.StartPort != na.EndPort {
		return -1, false
	}
	if na.Host != "" && na.Host != "127.0.0.1" && na.Host != "localhost" {
		return -1, false
	}
	held.Lock()
	defer held.Unlock()
	fd, ok := held.fds[int(na.StartPort)]
	return fd, ok
}

// handOver rewrites a JSON config's listen addresses on held ports to the
// held sockets' descriptors in this process.
func handOver(cfg []byte) ([]byte, error) {
	return rewriteListen(cfg, func(fd int) string { return "fd/" + strconv.Itoa(fd) })
}

// rewriteListen replaces, in a JSON config, every server listen address
// and the admin address that is on a held port with fdAddr(its socket),
// the address the Caddy that runs the config finds the socket at. An admin
// endpoint so moved keeps the origins Caddy would allow on the port, since
// Caddy allows none by default on a descriptor.
func rewriteListen(cfg []byte, fdAddr func(fd int) string) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &doc); err != nil {
		return nil, fmt.Errorf("reading the config: %v", err)
	}
	changed := false
	if raw, ok := doc["admin"]; ok {
		var admin map[string]any
		if err := json.Unmarshal(raw, &admin); err != nil {
			return nil, err
		}
		if addr, _ := admin["listen"].(string); addr != "" {
			if fd, ok := heldFD(addr); ok {
				if _, set := admin["origins"]; !set {
					na, _ := caddy.ParseNetworkAddress(addr)
					p := strconv.Itoa(int(na.StartPort))
					admin["origins"] = []string{"localhost:" + p, "[::1]:" + p, "127.0.0.1:" + p}
				}
				admin["listen"] = fdAddr(fd)
				doc["admin"], _ = json.Marshal(admin)
				changed = true
			}
		}
	}
	var apps map[string]json.RawMessage
	if raw, ok := doc["apps"]; ok {
		if err := json.Unmarshal(raw, &apps); err != nil {
			return nil, err
		}
	}
	if raw, ok := apps["http"]; ok {
		var httpApp map[string]json.RawMessage
		if err := json.Unmarshal(raw, &httpApp); err != nil {
			return nil, err
		}
		var servers map[string]map[string]json.RawMessage
		if raw, ok := httpApp["servers"]; ok {
			if err := json.Unmarshal(raw, &servers); err != nil {
				return nil, err
			}
		}
		serversChanged := false
		for _, srv := range servers {
			var listen []string
			if raw, ok := srv["listen"]; !ok || json.Unmarshal(raw, &listen) != nil {
				continue
			}
			moved := false
			for i, addr := range listen {
				if fd, ok := heldFD(addr); ok {
					listen[i], moved = fdAddr(fd), true
				}
			}
			if moved {
				srv["listen"], _ = json.Marshal(listen)
				serversChanged = true
			}
		}
		if serversChanged {
			httpApp["servers"], _ = json.Marshal(servers)
			apps["http"], _ = json.Marshal(httpApp)
			doc["apps"], _ = json.Marshal(apps)
			changed = true
		}
	}
	if !changed {
		return cfg, nil
	}
	return json.Marshal(doc)
}
