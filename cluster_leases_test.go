package apikey

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// slowProxy is a TCP proxy in front of a redis-server that holds every
// answer for delay before passing it on: a Redis that answers, but slower
// than the gateway's timeout.
type slowProxy struct {
	l     net.Listener
	delay atomic.Int64 // ns
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startSlowProxy(t *testing.T, target string, delay time.Duration) *slowProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{l: l}
	p.delay.Store(int64(delay))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, r)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(r, c); r.Close() }()
			go func() {
				defer p.wg.Done()
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := r.Read(buf)
					if n > 0 {
						time.Sleep(time.Duration(p.delay.Load()))
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *slowProxy) addr() string { return p.l.Addr().String() }

// leaseClusterSite is one gateway instance with keys on Redis (read
// directly) and counters on Redis through countersAddr, quota dev 300/day.
func leaseClusterSite(port int, keysAddr, countersAddr string, timeout time.Duration, upstream string) string {
	return gatewaytest.Site{Port: port, KeysRedis: keysAddr, CountersRedis: countersAddr, CountersOptions: fmt.Sprintf("timeout %v\non_failure local", timeout),
		Apikey: "quota dev 300/day\nfailed_auth_limit off", Handler: "reverse_proxy " + upstream}.Caddyfile()
}

// TestClusterNeverOverAdmits: two gateways, one in this process and one the
// built binary, share keys redis and counters redis with quota dev 300 a
// day. 1,000 requests from 64 clients, alternating between them: with a
// quiet Redis exactly 300 pass; with a Redis whose every answer comes
// later than the 50 ms timeout (each instance then counts as on_failure
// local says), never more than 300 pass in all.
func TestClusterNeverOverAdmits(t *testing.T) {
	const quota, requests, clients = 300, 1000, 64
	for _, tc := range []struct {
		name    string
		delay   time.Duration // of every Redis answer to the counters
		timeout time.Duration
	}{
		{"quiet", 0, 2 * time.Second},
		{"slower than the timeout", 200 * time.Millisecond, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			countersAddr := srv.Addr() // quiet: no proxy, which could itself be slow under -race
			if tc.delay > 0 {
				countersAddr = startSlowProxy(t, srv.Addr(), tc.delay).addr()
			}
			up := gatewaytest.NewUpstream(t)
			secret, err := apikeyCLI(t, "new", "--redis", srv.Addr(), "--type", "dev", "--role", "reader", "--id", "k_lease")
			if err != nil {
				t.Fatal(err)
			}
			ports := []int{gatewaytest.Port(t), gatewaytest.Port(t)}
			gatewaytest.Start(t, leaseClusterSite(ports[0], srv.Addr(), countersAddr, tc.timeout, up.Addr()))
			gatewaytest.StartProcess(t, leaseClusterSite(ports[1], srv.Addr(), countersAddr, tc.timeout, up.Addr()))

			var next, admitted, refused, other atomic.Int64
			perInstance := [2]atomic.Int64{}
			tr := &http.Transport{MaxIdleConnsPerHost: clients}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			var wg sync.WaitGroup
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= requests {
							return
						}
						req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/x", ports[i%2]), nil)
						req.Header.Set("Authorization", "Bearer "+secret)
						resp, err := hc.Do(req)
						if err != nil {
							other.Add(1)
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						switch resp.StatusCode {
						case 200:
							admitted.Add(1)
							perInstance[i%2].Add(1)
						case 429:
							refused.Add(1)
						default:
							other.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			t.Logf("admitted %d (%d and %d per instance), refused %d, other %d; the upstream saw %d",
				admitted.Load(), perInstance[0].Load(), perInstance[1].Load(), refused.Load(), other.Load(), up.Count())
			if admitted.Load() > quota || int64(up.Count()) > quota {
				t.Errorf("the cluster admitted %d requests (the upstream saw %d), over the quota of %d", admitted.Load(), up.Count(), quota)
			}
			if other.Load() != 0 || admitted.Load()+refused.Load() != requests {
				t.Errorf("%d requests were neither admitted nor refused with 429", other.Load())
			}
			if tc.delay == 0 {
				if admitted.Load() != quota {
					t.Errorf("with a quiet Redis, %d admitted, want exactly %d", admitted.Load(), quota)
				}
				// Every unit leased was spent: Redis counts what passed.
				rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
				defer rc.Close()
				n, err := rc.HGet(context.Background(), ratelimit.RedisKey(ratelimit.DefaultRedisKeyPrefix, "k_lease"), "n").Int64()
				if err != nil || n != quota {
					t.Errorf("redis counts %d (%v), want %d", n, err, quota)
				}
			} else if admitted.Load() == 0 {
				t.Errorf("on_failure local admitted nothing while Redis was slow")
			}
		})
	}
}
