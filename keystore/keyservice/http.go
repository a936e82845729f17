package keyservice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"sync/atomic"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(HTTPSource{})
}

// DefaultHTTPTimeout bounds one call to a key service.
const DefaultHTTPTimeout = 2 * time.Second

// maxRecordSize bounds a key service's answer.
const maxRecordSize = 1 << 20

// failureLogInterval is how often a failing key service is logged.
const failureLogInterval = 10 * time.Second

// httpPool shares one cache per key service configuration among every route
// that uses it, across config reloads.
var httpPool = caddy.NewUsagePool()

// HTTPSource asks a key service about keys, behind a cache. The raw key
// never leaves the gateway: the service gets its hash.
//
// Protocol: POST <url> with the body {"hash": "sha256:<hex>"}. The service
// answers 200 with one key record (the key file's record schema) whose hash
// or one of whose previous_hashes is the one asked about; 404 when it does
// not know the hash. Any other answer, a timeout, a connection error, a body
// that is not a valid record, or a record that does not answer to the hash
// is a service failure: a key with a usable cache entry keeps working, any
// other gets 503, never 401.
type HTTPSource struct {
	// URL of the key service.
	URL string `json:"url,omitempty"`
	// Headers are sent with every call, e.g. {"Authorization": ["Bearer
	// {env.KEYSVC_TOKEN}"]}. Global placeholders are filled when the config
	// loads.
	Headers http.Header `json:"headers,omitempty"`
	// Timeout bounds one call. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Cache in front of the service. Defaults as documented on
	// keycache.CacheConfig.
	Cache *keycache.CacheConfig `json:"cache,omitempty"`

	svc     *keyService
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (HTTPSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.apikey.sources.http",
		New: func() caddy.Module { return new(HTTPSource) },
	}
}

// Provision checks the configuration and joins (or starts) the shared cache
// for it.
func (s *HTTPSource) Provision(caddy.Context) error {
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("keys http: %q is not an http or https URL", s.URL)
	}
	timeout := time.Duration(s.Timeout)
	if timeout == 0 {
		timeout = DefaultHTTPTimeout
	}
	if timeout < 0 {
		return errors.New("keys http: timeout must be positive")
	}
	var cacheCfg keycache.CacheConfig
	if s.Cache != nil {
		cacheCfg = *s.Cache
	}
	cacheCfg, err = cacheCfg.WithDefaults()
	if err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	headers := http.Header{}
	for name, values := range s.Headers {
		for _, v := range values {
			headers.Add(name, repl.ReplaceKnown(v, ""))
		}
	}
	key := identity(s.URL, headers, timeout, cacheCfg)
	val, _, err := httpPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newKeyService(s.URL, headers, timeout, cacheCfg)
	})
	if err != nil {
		return err
	}
	s.svc, s.poolKey = val.(*keyService), key
	return nil
}

// identity names a configuration: routes with the same one share a cache.
// It is built from the resolved headers (hashed), so a secret that changed
// since the last load gets a new client.
func identity(u string, headers http.Header, timeout time.Duration, c keycache.CacheConfig) string {
	h := sha256.New()
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(h, "%s=%q;", name, headers[name])
	}
	return fmt.Sprintf("%s|%v|%d|%v|%v|%v|%x", u, timeout, c.MaxKeys, time.Duration(c.TTL),
		time.Duration(c.NegativeTTL), time.Duration(c.Stale), h.Sum(nil))
}

// Cleanup lets go of the shared cache. It copes with a failed Provision.
func (s *HTTPSource) Cleanup() error {
	if s.poolKey == "" {
		return nil
	}
	_, err := httpPool.Delete(s.poolKey)
	s.poolKey = ""
	return err
}

// Lookup answers from the cache, asking the service when it must.
func (s *HTTPSource) Lookup(ctx context.Context, d keystore.Digest) (keystore.Match, error) {
	return s.svc.cache.Lookup(ctx, d)
}

// LookupFor is Lookup on behalf of a client, bounding the calls it may
// have waiting (see keycache.Cache.LookupFor).
func (s *HTTPSource) LookupFor(ctx context.Context, d keystore.Digest, client netip.Prefix) (keystore.Match, error) {
	return s.svc.cache.LookupFor(ctx, d, client)
}

// CacheOf returns the cache in front of the service, for purges.
func (s *HTTPSource) CacheOf() *keycache.Cache { return s.svc.cache }

// UnmarshalCaddyfile sets up the source from Caddyfile tokens. Syntax:
//
//	keys http <url> {
//	    header <Name> <value>
//	    timeout <duration>
//	}
func (s *HTTPSource) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // source name
	if !d.NextArg() {
		return d.ArgErr()
	}
	s.URL = d.Val()
	if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return d.Errf("keys http: %q is not an http or https URL", s.URL)
	}
	if d.NextArg() {
		return d.Errf("keys http takes one URL, found another argument %q", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "header":
			var name, value string
			if !d.AllArgs(&name, &value) {
				return d.Err("want header <Name> <value>")
			}
			if s.Headers == nil {
				s.Headers = http.Header{}
			}
			s.Headers.Add(name, value)
		case "timeout":
			if s.Timeout != 0 {
				return d.Err("timeout given more than once")
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("timeout: %q is not a positive duration", v)
			}
			s.Timeout = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized keys http option %q", d.Val())
		}
	}
	return nil
}

// keyService is the pooled part: the HTTP client and the cache.
type keyService struct {
	url     string
	headers http.Header
	client  *http.Client
	cache   *keycache.Cache

	lastLogged atomic.Int64 // Unix nanoseconds
	suppressed atomic.Int64
}

func newKeyService(u string, headers http.Header, timeout time.Duration, cfg keycache.CacheConfig) (*keyService, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	svc := &keyService{url: u, headers: headers, client: &http.Client{
		Timeout:   timeout,
		Transport: transport,
		// A redirect is an answer the protocol does not have: following
		// it would turn a POST into a GET whose 404 reads as "unknown key",
		// and carry the headers to another host. It is a failure.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	cache, err := keycache.New(cfg, svc.fetch, nil, svc.logFailure)
	if err != nil {
		return nil, err
	}
	svc.cache = cache
	return svc, nil
}

// fetch makes one call to the service.
func (s *keyService) fetch(ctx context.Context, d keystore.Digest) (keystore.Match, error) {
	body := []byte(`{"hash":"` + d.Encode() + `"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return keystore.Match{}, err
	}
	for name, values := range s.headers {
		req.Header[name] = values
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return keystore.Match{}, redactURLError(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxRecordSize))
		return keystore.Match{}, nil
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxRecordSize))
		return keystore.Match{}, fmt.Errorf("key service answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRecordSize+1))
	if err != nil {
		return keystore.Match{}, fmt.Errorf("reading the key service's answer: %w", err)
	}
	if len(data) > maxRecordSize {
		return keystore.Match{}, fmt.Errorf("the key service's answer is over %d bytes", maxRecordSize)
	}
	rec, err := keystore.DecodeRecord(data)
	if err != nil {
		return keystore.Match{}, fmt.Errorf("the key service's record (id %q) is invalid: %w", rec.ID, err)
	}
	k, err := keystore.Compile(rec)
	if err != nil {
		return keystore.Match{}, fmt.Errorf("the key service's record (id %q) is invalid: %w", rec.ID, err)
	}
	if m, ok := keystore.MatchFor(k, d); ok {
		return m, nil
	}
	return keystore.Match{}, fmt.Errorf("the key service's record (id %q) does not answer to the hash asked about", rec.ID)
}

// safeURL is the URL without user info or query, which may hold secrets.
func safeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// redactURLError keeps the error's cause: url.Error would repeat the URL,
// which is in the config anyway, and nothing else; it is kept short.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return errors.New("key service timed out")
		}
		return fmt.Errorf("calling the key service: %w", ue.Err)
	}
	return err
}

// logFailure logs a service failure at most once per interval, with how
// many were not logged since.
func (s *keyService) logFailure(err error) {
	keystore.ObserveSourceError("http")
	now := time.Now().UnixNano()
	last := s.lastLogged.Load()
	if now-last < int64(failureLogInterval) || !s.lastLogged.CompareAndSwap(last, now) {
		s.suppressed.Add(1)
		return
	}
	caddy.Log().Named("http.apikey.sources.http").Error("key service failed",
		zap.String("url", safeURL(s.url)), zap.Error(err), zap.Int64("failures_not_logged", s.suppressed.Swap(0)))
}

// Destruct stops background refreshes and frees the cache.
func (s *keyService) Destruct() error {
	s.cache.Close()
	s.client.CloseIdleConnections()
	return nil
}

// Interface guards
var (
	_ keystore.Source       = (*HTTPSource)(nil)
	_ caddy.Provisioner     = (*HTTPSource)(nil)
	_ caddy.CleanerUpper    = (*HTTPSource)(nil)
	_ caddyfile.Unmarshaler = (*HTTPSource)(nil)
)
