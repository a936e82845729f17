package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/leak"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

func init() {
	caddy.RegisterModule(LeakReport{})
}

// eventLeaked is sent for each key a leak report marks leaked.
const eventLeaked = "apikey_leaked"

// DefaultPublicKeysRefresh is how often public_keys_url is fetched again.
const DefaultPublicKeysRefresh = caddy.Duration(time.Hour)

// LeakReport is the endpoint a secret scanner reports leaked keys to:
// GitHub's secret scanning partner program (reports signed with ECDSA
// P-256, checked against GitHub's public keys) or an internal scanner
// (reports signed with a shared HMAC secret). Each real key reported is
// marked leaked on its record (leaked_at, leak_url, leak_source,
// leak_action) and revoked, paused or left working as configured; the
// answer labels each token true_positive or false_positive. See
// docs/leak-reports.md.
type LeakReport struct {
	// Keys is the key store the reported keys are looked up and changed
	// in, as the apikey handler's and the portal's: {"source": "file",
	// …} or {"source": "redis", …}. Required; it must be editable.
	KeysRaw json.RawMessage `json:"keys,omitempty" caddy:"namespace=http.apikey.sources inline_key=source"`

	// PublicKeys is a file holding the scanner's public keys, in the
	// shape of GitHub's https://api.github.com/meta/public_keys/secret_scanning.
	PublicKeys string `json:"public_keys,omitempty"`

	// PublicKeysURL is where the scanner's public keys document is
	// fetched from (https; http only from a loopback address), at start
	// and every PublicKeysRefresh, and when a report names a key
	// identifier not known yet. A failed fetch keeps the last good keys.
	PublicKeysURL string `json:"public_keys_url,omitempty"`

	// PublicKeysRefresh is how often PublicKeysURL is fetched again.
	// Default 1h.
	PublicKeysRefresh caddy.Duration `json:"public_keys_refresh,omitempty"`

	// HMAC is the secret an internal scanner signs its reports with
	// (hex HMAC-SHA256 of the body in X-Signature-256). Global
	// placeholders are filled: {env.NAME}, {file./path}.
	HMAC string `json:"hmac,omitempty"`

	// Action is what is done with a leaked key: revoke (the default),
	// pause or notify.
	Action string `json:"action,omitempty"`

	// ActionByType overrides Action for the keys of a type: {"dev":
	// "notify"}.
	ActionByType map[string]string `json:"action_by_type,omitempty"`

	// Rate is how many reports the endpoint takes, e.g. "60/m" (the
	// default); refused requests are limited apart, at the same rate.
	Rate string `json:"rate,omitempty"`

	// AuditLog is the audit log each leak is written to. Default: the
	// audit_log of an apikey handler of the config using the same store.
	AuditLog string `json:"audit_log,omitempty"`

	receiver     *leak.Receiver
	source       keystore.Editable
	audit        *audit.Writer
	auditRelease func() error
	// activity is where the store's portal hears of a leak, to tell the
	// key's owner.
	activity        *activity.Tracker
	activityRelease func() error
	app             *app.App
	events          emitter
	logger          *zap.Logger
	stop            context.CancelFunc
}

// CaddyModule returns the Caddy module information.
func (LeakReport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey_leak_report",
		New: func() caddy.Module { return new(LeakReport) },
	}
}

// Provision loads the key store and the public keys.
func (l *LeakReport) Provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	var err error
	if l.app, err = app.Of(ctx); err != nil {
		return err
	}
	src, err := loadEditable(ctx, l, l.KeysRaw, "the leak report endpoint")
	if err != nil {
		return err
	}
	l.source = src
	if l.activity, l.activityRelease, err = app.HoldActivity(src.Store()); err != nil {
		return err
	}
	rc := &leak.Receiver{Store: src.Store(), Lookup: src.Lookup, Changed: src.Changed, Logger: l.logger, Reported: l.reported}
	if rc.Action, err = l.actions(); err != nil {
		return err
	}
	limit := rate.Rate{Limit: leak.DefaultRate, Period: time.Minute}
	if l.Rate != "" {
		if limit, err = rate.Parse(l.Rate); err != nil {
			return fmt.Errorf("rate: %w", err)
		}
	}
	rc.SetRate(limit.Limit, limit.Period)
	if l.HMAC != "" {
		secret := caddy.NewReplacer().ReplaceKnown(l.HMAC, "")
		if secret == "" {
			return errors.New("hmac: the secret is empty (is its {env.*} or {file.*} placeholder set?)")
		}
		rc.HMAC = []byte(secret)
	}
	if l.PublicKeys != "" || l.PublicKeysURL != "" {
		if rc.Keys, err = l.keySet(ctx); err != nil {
			return err
		}
	}
	if rc.Keys == nil && rc.HMAC == nil {
		return errors.New("the leak report endpoint needs a way to check reports: public_keys <file>, public_keys_url <url> or hmac <secret>")
	}
	if l.AuditLog != "" {
		if l.audit, l.auditRelease, err = app.OpenAudit(l.AuditLog); err != nil {
			return fmt.Errorf("audit_log: %w", err)
		}
	}
	l.events = newEmitter(ctx)
	l.receiver = rc
	return nil
}

// actions reads action and action_by_type.
func (l *LeakReport) actions() (func(keystore.Type) keystore.LeakAction, error) {
	def := keystore.LeakRevoke
	if l.Action != "" {
		a, err := keystore.ParseLeakAction(l.Action)
		if err != nil {
			return nil, fmt.Errorf("action: %w", err)
		}
		def = a
	}
	byType := map[keystore.Type]keystore.LeakAction{}
	for t, a := range l.ActionByType {
		typ, err := keystore.ParseType(t)
		if err != nil {
			return nil, fmt.Errorf("action_by_type: %w", err)
		}
		if byType[typ], err = keystore.ParseLeakAction(a); err != nil {
			return nil, fmt.Errorf("action_by_type %s: %w", t, err)
		}
	}
	return func(t keystore.Type) keystore.LeakAction {
		if a, ok := byType[t]; ok {
			return a
		}
		return def
	}, nil
}

// keySet reads public_keys, fetches public_keys_url and starts its
// refresh.
func (l *LeakReport) keySet(ctx caddy.Context) (*leak.KeySet, error) {
	var fixed leak.PublicKeys
	if l.PublicKeys != "" {
		doc, err := os.ReadFile(l.PublicKeys)
		if err != nil {
			return nil, fmt.Errorf("public_keys: %w", err)
		}
		if fixed, err = leak.ParsePublicKeys(doc); err != nil {
			return nil, fmt.Errorf("public_keys %s: %w", l.PublicKeys, err)
		}
	}
	ks, err := leak.NewKeySet(fixed, l.PublicKeysURL)
	if err != nil {
		return nil, err
	}
	if l.PublicKeysURL == "" {
		return ks, nil
	}
	if err := ks.Refresh(ctx); err != nil {
		// Not fatal: the keys are fetched again when a report comes,
		// and at every refresh; until then reports are refused.
		l.logger.Warn("public keys not fetched; reports signed with them are refused until a fetch succeeds", zap.Error(err))
	}
	every := time.Duration(l.PublicKeysRefresh)
	if every <= 0 {
		every = time.Duration(DefaultPublicKeysRefresh)
	}
	runCtx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go ks.Run(runCtx, every, func(err error) {
		l.logger.Warn("public keys not refreshed; keeping the last good ones", zap.Error(err))
	})
	return ks, nil
}

// auditLog is the endpoint's own audit log, or that of a route of its
// config using its store.
func (l *LeakReport) auditLog() *audit.Writer {
	if l.audit != nil {
		return l.audit
	}
	if r, ok := l.app.RouteOf(l.source.Store()); ok {
		return r.Audit
	}
	return nil
}

// reported writes the audit entry and sends the event of a key marked
// leaked. Neither holds the token or its hash.
func (l *LeakReport) reported(k leak.Leaked) {
	fields := map[string]any{"key_id": k.KeyID, "key_type": k.KeyType.String(), "action": string(k.Action),
		"leak_url": k.URL, "leak_source": k.Source, "token_type": k.TokenType, "old_secret": k.OldSecret,
		"leaked_at": k.At.UTC().Format(time.RFC3339)}
	if w := l.auditLog(); w != nil {
		e := audit.Entry{"event": "key.leaked", "actor": "leak_report", "store": l.source.Store().Describe()}
		for name, v := range fields {
			e[name] = v
		}
		if err := w.LogNow(e); err != nil {
			l.logger.Error("audit log not written for a leaked key", zap.String("key_id", k.KeyID), zap.Error(err))
		}
	}
	l.emitLeaked(fields)
	l.activity.Publish(activity.KeyEvent{KeyID: k.KeyID, Event: "key.leaked", Detail: leakDetail(k), At: k.At})
}

// leakDetail is what the key's owner is told of a leak: where it was
// found and what was done.
func leakDetail(k leak.Leaked) string {
	d := "found"
	if k.URL != "" {
		d += " at " + k.URL
	}
	if k.Source != "" {
		d += " (" + k.Source + ")"
	}
	return d + "; action: " + string(k.Action)
}

// emitLeaked sends apikey_leaked.
func (l *LeakReport) emitLeaked(data map[string]any) {
	l.events.emit(eventLeaked, data)
}

// ServeHTTP answers a report.
func (l *LeakReport) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	l.receiver.ServeHTTP(w, r)
	return nil
}

// Cleanup stops the public keys' refresh and lets go of the audit log.
func (l *LeakReport) Cleanup() error {
	if l.stop != nil {
		l.stop()
	}
	return errors.Join(letGo(&l.auditRelease), letGo(&l.activityRelease))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*LeakReport)(nil)
	_ caddy.CleanerUpper          = (*LeakReport)(nil)
	_ caddyhttp.MiddlewareHandler = (*LeakReport)(nil)
)
