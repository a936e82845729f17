package leak

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// maxKeysDocument bounds a fetched public keys document.
const maxKeysDocument = 256 << 10

// fetchTimeout bounds one fetch of the public keys document.
const fetchTimeout = 10 * time.Second

// refetchUnknownEvery bounds the fetches a report signed by an unknown key
// identifier causes (the scanner may have rotated its keys since the last
// refresh): at most one per this period.
const refetchUnknownEvery = time.Minute

// KeySet is the public keys reports are checked against: those of a file
// given in the config, and those of a document fetched from a URL and
// refreshed. A fetch that fails, or whose document does not parse, keeps
// the last good set: a report is never accepted unsigned.
type KeySet struct {
	fixed  PublicKeys
	url    string
	client *http.Client

	mu          sync.Mutex
	fetched     PublicKeys
	lastAttempt time.Time
	lastErr     error
	refetching  chan struct{} // closed when the refetch in flight ends; nil: none
}

// NewKeySet makes a key set of fixed keys (may be nil) and, when rawURL is
// not "", the keys of the document at rawURL. The URL must be https, or
// http to a loopback address (a local mirror, a test).
func NewKeySet(fixed PublicKeys, rawURL string) (*KeySet, error) {
	ks := &KeySet{fixed: fixed, url: rawURL, client: &http.Client{Timeout: fetchTimeout}}
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("public_keys_url %q is not a URL", rawURL)
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && loopback(u.Hostname())) {
			return nil, fmt.Errorf("public_keys_url %q: the keys that prove a report genuine are fetched over https only (http only from a loopback address)", rawURL)
		}
	}
	if len(fixed) == 0 && rawURL == "" {
		return nil, errors.New("no public keys: give public_keys <file> or public_keys_url <url>")
	}
	return ks, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Verify checks a report's signature against the set. A report signed by a
// key identifier the set does not know makes the set fetch its document
// again first (at most once a minute), as a scanner may have rotated its
// keys since.
func (ks *KeySet) Verify(ctx context.Context, keyID, sig string, body []byte) error {
	if pub := ks.key(keyID); pub != nil || ks.url == "" {
		return PublicKeys{keyID: pub}.Verify(keyID, sig, body)
	}
	ks.refetch(ctx)
	return PublicKeys{keyID: ks.key(keyID)}.Verify(keyID, sig, body)
}

// refetch fetches the document again, at most once a minute, and waits for
// the fetch (or for ctx). The fetch runs on its own context: a request that
// goes away does not end it (which would also spend the minute's fetch),
// and the reports that come while it runs wait for it rather than being
// refused for a key it is about to bring.
func (ks *KeySet) refetch(ctx context.Context) {
	ks.mu.Lock()
	wait := ks.refetching
	if wait == nil {
		if time.Since(ks.lastAttempt) < refetchUnknownEvery {
			ks.mu.Unlock()
			return
		}
		done := make(chan struct{})
		ks.refetching, wait = done, done
		go func() {
			_ = ks.Refresh(context.Background()) // bounded by fetchTimeout
			ks.mu.Lock()
			ks.refetching = nil
			ks.mu.Unlock()
			close(done)
		}()
	}
	ks.mu.Unlock()
	select {
	case <-wait:
	case <-ctx.Done():
	}
}

func (ks *KeySet) key(keyID string) *ecdsa.PublicKey {
	if pub := ks.fixed[keyID]; pub != nil {
		return pub
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.fetched[keyID]
}

// Refresh fetches the document at the set's URL; on success its keys
// replace the fetched ones, on failure the last good ones stay and the
// error is returned.
func (ks *KeySet) Refresh(ctx context.Context) error {
	if ks.url == "" {
		return nil
	}
	ks.mu.Lock()
	ks.lastAttempt = time.Now()
	ks.mu.Unlock()
	keys, err := ks.fetch(ctx)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.lastErr = err
	if err == nil {
		ks.fetched = keys
	}
	return err
}

func (ks *KeySet) fetch(ctx context.Context) (PublicKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the public keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the public keys: %s answered %d", ks.url, resp.StatusCode)
	}
	doc, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysDocument+1))
	if err != nil {
		return nil, fmt.Errorf("fetching the public keys: %w", err)
	}
	if len(doc) > maxKeysDocument {
		return nil, fmt.Errorf("fetching the public keys: the document is larger than %d bytes", maxKeysDocument)
	}
	keys, err := ParsePublicKeys(doc)
	if err != nil {
		return nil, fmt.Errorf("the public keys at %s: %w", ks.url, err)
	}
	return keys, nil
}

// Fetched is the number of keys of the last good fetch, and the error of
// the last attempt, if it failed.
func (ks *KeySet) Fetched() (int, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return len(ks.fetched), ks.lastErr
}

// Run refreshes the set every period until ctx ends; onError hears each
// failed refresh (the last good keys stay).
func (ks *KeySet) Run(ctx context.Context, every time.Duration, onError func(error)) {
	if ks.url == "" {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := ks.Refresh(ctx); err != nil && ctx.Err() == nil && onError != nil {
				onError(err)
			}
		}
	}
}
