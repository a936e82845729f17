package portal

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
)

// Notifications: a developer is told, on the portal's Notifications page
// and at the webhook URL they set, of what an administrator did to one of
// their keys (approved, paused, resumed, revoked). Deliveries are signed
// (SignatureHeader), retried with exponential backoff (MaxAttempts), and
// queued in a bounded queue (MaxQueue; the oldest is dropped, and counted).

// Bounds.
const (
	// MaxQueue is how many deliveries wait at once; past it the oldest is
	// dropped (counted in Dropped).
	MaxQueue = 1000
	// MaxAttempts is how many times a delivery is tried.
	MaxAttempts = 5
	// MaxNotices and MaxDeliveries are how many of each a developer's
	// page keeps, the last ones.
	MaxNotices    = 50
	MaxDeliveries = 20
	// MaxWebhooks is how many developers may set a webhook.
	MaxWebhooks = 10_000
	// maxURL is the longest webhook URL accepted.
	maxURL = 2048

	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// "<t>.<body>" with the webhook's secret>".
	SignatureHeader = "Apikey-Signature"
	// EventHeader names the event.
	EventHeader = "Apikey-Event"
)

// Notice is what a developer is told.
type Notice struct {
	ID string `json:"id"`
	// Event is key.approved, key.paused, key.resumed, key.revoked (an
	// administrator's action), key.quota, key.tokens (Percent of the daily
	// quota or token budget used), key.expiring or key.leaked.
	Event   string    `json:"event"`
	KeyID   string    `json:"key_id"`
	By      string    `json:"by,omitempty"`
	Percent int64     `json:"percent,omitempty"`
	Time    time.Time `json:"time"`
	Text    string    `json:"text"`
}

// Delivery is one notice's delivery to a webhook, as it went.
type Delivery struct {
	NoticeID string
	Event    string
	URL      string
	Attempts int
	Status   int    // the last answer's status; 0 for none
	Error    string // the last failure, in words; "" when delivered
	Done     bool   // delivered, or given up on
	Time     time.Time
}

// webhook is a developer's webhook: its URL and secret.
type webhook struct {
	URL    string `json:"url"`
	Secret string `json:"secret"`
}

type job struct {
	owner   string
	hook    webhook
	notice  Notice
	body    []byte
	attempt int
	due     time.Time
	record  *Delivery
}

// notifier keeps the webhooks, notices and deliveries, and delivers.
type notifier struct {
	path     string // where webhooks are kept; "" for memory only
	loopback bool   // webhooks may go to http://127.0.0.1, [::1] or localhost
	logger   *zap.Logger
	client   *http.Client
	backoff  time.Duration // before the second attempt; doubled after each

	mu         sync.Mutex
	hooks      map[string]webhook
	notices    map[string][]Notice
	deliveries map[string][]*Delivery
	queue      []*job
	wake       chan struct{}
	stop       chan struct{}
	running    bool
	// Dropped counts the deliveries dropped from a full queue.
	Dropped atomic.Uint64
}

func newNotifier(path string, loopback bool, logger *zap.Logger) *notifier {
	n := &notifier{path: path, loopback: loopback, logger: logger, backoff: time.Second,
		hooks: map[string]webhook{}, notices: map[string][]Notice{}, deliveries: map[string][]*Delivery{},
		wake: make(chan struct{}, 1), stop: make(chan struct{})}
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: n.control}
	n.client = &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{DialContext: dialer.DialContext, Proxy: nil, MaxIdleConns: 10, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if path != "" {
		if data, err := os.ReadFile(path); err == nil {
			if err := json.Unmarshal(data, &n.hooks); err != nil {
				logger.Error("the portal's webhooks file does not parse; starting without webhooks", zap.String("file", path), zap.Error(err))
				n.hooks = map[string]webhook{}
			}
		}
	}
	return n
}

// control refuses, at connection time (after DNS), an address a webhook
// may not reach: anything but a public address, or, with loopback,
// a loopback one.
func (n *notifier) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return err
	}
	a := ap.Addr().Unmap()
	if a.IsLoopback() && n.loopback {
		return nil
	}
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsMulticast() ||
		a.IsUnspecified() || a.IsInterfaceLocalMulticast() || cgnat.Contains(a) {
		return fmt.Errorf("webhooks may not go to %s (not a public address)", a)
	}
	return nil
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// checkWebhookURL says what is wrong with a webhook URL, or nil.
func (n *notifier) checkWebhookURL(raw string) error {
	if len(raw) > maxURL {
		return refuse("url", "is longer than %d characters", maxURL)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return refuse("url", "is not an absolute https:// URL (without user name or #fragment)")
	}
	host := u.Hostname()
	loop := host == "localhost" || host == "127.0.0.1" || host == "::1"
	switch {
	case u.Scheme == "https" && !loop:
	case (u.Scheme == "http" || u.Scheme == "https") && loop && n.loopback:
	case loop:
		return refuse("url", "may not point at this machine (the operator allows it with webhooks_loopback, for tests)")
	default:
		return refuse("url", "must start with https://")
	}
	if a, err := netip.ParseAddr(host); err == nil && !a.IsLoopback() {
		if err := n.control("", netip.AddrPortFrom(a, 443).String(), nil); err != nil {
			return refuse("url", "points at an address webhooks may not reach (private or local)")
		}
	}
	return nil
}

// setWebhook sets a developer's webhook URL; it returns the secret when it
// made one (the first time, or when asked to), "" otherwise.
func (n *notifier) setWebhook(owner, rawURL string, newSecret bool) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, had := n.hooks[owner]
	if !had && len(n.hooks) >= MaxWebhooks {
		return "", sentence("The portal holds as many webhooks as it may; ask the operator.")
	}
	secret := ""
	if !had || newSecret || h.Secret == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		secret = "whsec_" + hex.EncodeToString(b)
		h.Secret = secret
	}
	h.URL = rawURL
	n.hooks[owner] = h
	return secret, n.saveLocked()
}

// removeWebhook forgets a developer's webhook.
func (n *notifier) removeWebhook(owner string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.hooks, owner)
	return n.saveLocked()
}

func (n *notifier) saveLocked() error {
	if n.path == "" {
		return nil
	}
	data, err := json.Marshal(n.hooks)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(n.path, data, 0o600)
}

// notify tells owner of e: a notice on the page, and a delivery to their
// webhook if they set one.
func (n *notifier) notify(owner string, e Notice) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	e.ID = "ntc_" + hex.EncodeToString(b)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.notices[owner] = appendBounded(n.notices[owner], e, MaxNotices)
	h, ok := n.hooks[owner]
	if !ok {
		return
	}
	body, _ := json.Marshal(e)
	d := &Delivery{NoticeID: e.ID, Event: e.Event, URL: h.URL, Time: e.Time}
	n.deliveries[owner] = appendBounded(n.deliveries[owner], d, MaxDeliveries)
	if len(n.queue) >= MaxQueue {
		old := n.queue[0]
		old.record.Done, old.record.Error = true, "dropped: the delivery queue was full"
		n.queue = n.queue[1:]
		n.Dropped.Add(1)
	}
	n.queue = append(n.queue, &job{owner: owner, hook: h, notice: e, body: body, record: d, due: time.Now()})
	if !n.running {
		n.running = true
		go n.run()
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func appendBounded[T any](s []T, v T, limit int) []T {
	s = append(s, v)
	if len(s) > limit {
		s = append(s[:0:0], s[len(s)-limit:]...)
	}
	return s
}

// run delivers what is due, one at a time, until close.
func (n *notifier) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n.mu.Lock()
		var next *job
		wait := time.Hour
		now := time.Now()
		for i, j := range n.queue {
			if !j.due.After(now) {
				next = j
				n.queue = append(n.queue[:i:i], n.queue[i+1:]...)
				break
			}
			wait = min(wait, j.due.Sub(now))
		}
		n.mu.Unlock()
		if next != nil {
			n.attempt(next)
			continue
		}
		timer.Reset(wait)
		select {
		case <-n.stop:
			return
		case <-n.wake:
		case <-timer.C:
		}
	}
}

// attempt tries a delivery once, and queues it again, later, on a failure.
func (n *notifier) attempt(j *job) {
	j.attempt++
	status, err := n.post(j)
	n.mu.Lock()
	defer n.mu.Unlock()
	d := j.record
	d.Attempts, d.Status, d.Time = j.attempt, status, time.Now()
	if err == nil {
		d.Done, d.Error = true, ""
		return
	}
	d.Error = err.Error()
	if j.attempt >= MaxAttempts {
		d.Done = true
		d.Error += fmt.Sprintf(" (gave up after %d attempts)", j.attempt)
		return
	}
	j.due = time.Now().Add(n.backoff << (j.attempt - 1))
	if len(n.queue) >= MaxQueue {
		d.Done, d.Error = true, "dropped: the delivery queue was full"
		n.Dropped.Add(1)
		return
	}
	n.queue = append(n.queue, j)
}

// post sends the notice, signed.
func (n *notifier) post(j *job) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.hook.URL, bytes.NewReader(j.body))
	if err != nil {
		return 0, errors.New("the URL cannot be requested")
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-apikey-portal")
	req.Header.Set(EventHeader, j.notice.Event)
	req.Header.Set(SignatureHeader, "t="+ts+",v1="+Sign(j.hook.Secret, ts, j.body))
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("not delivered: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("answered %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// Sign is the hex HMAC-SHA256 of "<timestamp>.<body>" with secret: what
// SignatureHeader's v1 holds.
func Sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// of returns a developer's webhook URL ("" for none), notices (newest
// first) and deliveries (newest first), copied.
func (n *notifier) of(owner string) (string, []Notice, []Delivery) {
	n.mu.Lock()
	defer n.mu.Unlock()
	notices := make([]Notice, 0, len(n.notices[owner]))
	for i := len(n.notices[owner]) - 1; i >= 0; i-- {
		notices = append(notices, n.notices[owner][i])
	}
	ds := make([]Delivery, 0, len(n.deliveries[owner]))
	for i := len(n.deliveries[owner]) - 1; i >= 0; i-- {
		ds = append(ds, *n.deliveries[owner][i])
	}
	return n.hooks[owner].URL, notices, ds
}

// close stops delivering; what waits is dropped.
func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		close(n.stop)
		n.running = false
	}
}
