package leak

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Receiver answers a scanner's reports: it checks each report's signature,
// labels each token, and marks the keys that are real as leaked, acting
// as the operator chose. It is an http.Handler for POSTed reports.
//
// It is idempotent: a key already marked leaked is left as it is, and a
// signed body seen before gets the answer it got then and causes nothing.
// It never logs a token or its hash; it names keys by their ids.
type Receiver struct {
	// Keys check GitHub-style ECDSA signatures; nil when none are set up.
	Keys *KeySet
	// HMAC is the shared secret of an internal scanner; nil for none.
	HMAC []byte
	// Store is where the keys' records are changed.
	Store keystore.Store
	// Lookup finds a key by its digest (the source's lookup).
	Lookup func(ctx context.Context, d keystore.Digest) (keystore.Match, error)
	// Changed makes the source see a change to the key id at once.
	Changed func(id string)
	// Action is what to do with a leaked key of type t.
	Action func(t keystore.Type) keystore.LeakAction
	// Reported hears each key marked leaked (once per key: not a key
	// already marked), for the audit log and the events.
	Reported func(Leaked)
	// Logger gets a line per report; never a token.
	Logger *zap.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	rateOnce          sync.Once
	accepted, refused *bucket
	replays           replays
}

// Leaked is a key a report marked leaked.
type Leaked struct {
	// KeyID names the key.
	KeyID string
	// KeyType is the type of the reported token's prefix.
	KeyType keystore.Type
	// Action is what was done.
	Action keystore.LeakAction
	// URL, Source and TokenType are as the report gave them.
	URL, Source, TokenType string
	// OldSecret is true when the token was a secret the key had before a
	// rotation, still in its grace.
	OldSecret bool
	// At is when the report came.
	At time.Time
}

// SetRate sets how many reports the receiver takes per period, and,
// separately, how many refused ones it answers; call it before the
// receiver serves. Without it, DefaultRate a minute.
func (rc *Receiver) SetRate(limit int64, period time.Duration) {
	rc.rateOnce.Do(func() { rc.accepted, rc.refused = newBucket(limit, period), newBucket(limit, period) })
}

func (rc *Receiver) now() time.Time {
	if rc.Now != nil {
		return rc.Now()
	}
	return time.Now()
}

// errorBody is a refusal's body, as the gateway's own refusals have it.
func writeError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"status": status, "code": code, "message": message}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeTooMany(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "60")
	writeError(w, http.StatusTooManyRequests, "rate_limited", "Too many reports; retry in a minute.")
}

// ServeHTTP answers one report.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.SetRate(DefaultRate, time.Minute) // no change once set
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Reports are POSTed.")
		return
	}
	now := rc.now()
	// A flood of refused requests must not keep genuine reports out: the
	// two are limited apart, and a refused one is known only once read.
	if rc.refused.empty(now) && rc.accepted.empty(now) {
		writeTooMany(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		if !rc.refused.take(now) {
			writeTooMany(w)
			return
		}
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "The report is larger than "+strconv.Itoa(MaxBody)+" bytes; send it in parts.")
			return
		}
		writeError(w, http.StatusBadRequest, "unreadable", "The report body could not be read.")
		return
	}
	if err := rc.verify(r, body); err != nil {
		if !rc.refused.take(now) {
			writeTooMany(w)
			return
		}
		rc.Logger.Warn("leak report refused: its signature does not check", zap.String("reason", err.Error()),
			zap.String("key_identifier", keystore.MaskSecrets(printable(r.Header.Get(KeyIDHeader)))))
		writeError(w, http.StatusUnauthorized, "bad_signature", "The report's signature does not check.")
		return
	}
	if !rc.accepted.take(now) {
		writeTooMany(w)
		return
	}
	if answer, ok := rc.replays.get(body, now); ok {
		rc.Logger.Info("leak report seen before: answered as then, nothing done")
		writeAnswer(w, answer)
		return
	}
	items, err := ParseReport(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed", "The report is refused: "+err.Error()+".")
		return
	}
	feedback, leaked, err := rc.process(r.Context(), items, now)
	if err != nil {
		rc.Logger.Error("leak report not finished: the key store did not answer; the scanner will retry", zap.Error(err), zap.Strings("marked_leaked", leaked))
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "The key store did not answer; retry shortly.")
		return
	}
	answer, _ := json.Marshal(feedback)
	rc.replays.put(body, answer, now)
	rc.Logger.Info("leak report answered", zap.Int("tokens", len(items)), zap.Strings("marked_leaked", leaked))
	writeAnswer(w, answer)
}

func writeAnswer(w http.ResponseWriter, answer []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(answer)
}

// verify checks the report's signature: GitHub's headers when it has
// them, else the internal scanner's HMAC header.
func (rc *Receiver) verify(r *http.Request, body []byte) error {
	keyID, sig := r.Header.Get(KeyIDHeader), r.Header.Get(SignatureHeader)
	switch {
	case keyID != "" || sig != "":
		if rc.Keys == nil {
			return errors.New("no public keys are set up: hmac only")
		}
		return rc.Keys.Verify(r.Context(), keyID, sig, body)
	case rc.HMAC != nil && r.Header.Get(HMACHeader) != "":
		return VerifyHMAC(rc.HMAC, r.Header.Get(HMACHeader), body)
	}
	return errors.New("the report is not signed")
}

// process labels each token and marks the real ones leaked. It returns
// the ids of the keys it marked; an error when the store could not answer
// (what was marked stays marked, and a retry finds it so).
func (rc *Receiver) process(ctx context.Context, items []Item, now time.Time) ([]Feedback, []string, error) {
	feedback := make([]Feedback, len(items))
	var marked []string
	for i, it := range items {
		feedback[i] = Feedback{TokenHash: TokenHash(it.Token), TokenType: it.Type, Label: FalsePositive}
		typ, ok := WellFormed(it.Token)
		if !ok {
			continue // not one of ours: no lookup
		}
		digest := keystore.Sum(it.Token)
		m, err := rc.Lookup(ctx, digest)
		if err != nil {
			return nil, marked, err
		}
		if m.Key == nil || (m.Key.Type != 0 && m.Key.Type != typ) {
			continue
		}
		if m.Previous != nil && !now.Before(m.Previous.ValidUntil) {
			// An old secret past its rotation grace no longer works: it
			// is no live credential, and the key's current secret was
			// not leaked with it.
			continue
		}
		action := keystore.LeakRevoke
		if rc.Action != nil {
			action = rc.Action(typ)
		}
		_, err = keystore.MarkLeaked(ctx, rc.Store, m.Key.ID, keystore.Leak{At: now, URL: it.URL, Source: it.Source, Action: action, Secret: digest})
		switch {
		case errors.Is(err, keystore.ErrAlreadyLeaked):
			feedback[i].Label = TruePositive
			continue
		case errors.Is(err, keystore.ErrUnknownID), errors.Is(err, keystore.ErrNotThisSecret):
			continue // removed or rotated since the lookup: the secret is no longer a key's
		case err != nil:
			return nil, marked, err
		}
		feedback[i].Label = TruePositive
		marked = append(marked, m.Key.ID)
		if rc.Changed != nil {
			rc.Changed(m.Key.ID)
		}
		if rc.Reported != nil {
			rc.Reported(Leaked{KeyID: m.Key.ID, KeyType: typ, Action: action, URL: it.URL, Source: it.Source,
				TokenType: it.Type, OldSecret: m.Previous != nil, At: now})
		}
	}
	return feedback, marked, nil
}

// printable keeps a header value fit for a log line: at most 64 bytes of
// printable ASCII.
func printable(s string) string {
	b := []byte(s)
	if len(b) > 64 {
		b = b[:64]
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
