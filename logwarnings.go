package apikey

import (
	"bytes"
	"encoding/json"
	"slices"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/headers"
)

// redactedByCaddy are the request headers Caddy's logs redact (unless the
// server sets log_credentials).
var redactedByCaddy = map[string]bool{"Authorization": true, "Proxy-Authorization": true, "Cookie": true}

// loggedRequest is one kind of Caddy log line that writes a request's
// headers: which logger writes it, at which level, and what to say.
type loggedRequest struct {
	subject string // dedupes the warning
	level   zapcore.Level
	loggers []string
	what    string // what writes the headers, for the message
	fix     string // besides the filter
}

// warnAboutLogs warns when one of Caddy's logs would write in full a
// header the handler reads a key from (the access log, the error log of a
// failing handler, and rewrite's debug line all write the request as the
// client sent it) or writes the upstream's credential into
// (reverse_proxy's debug "upstream roundtrip" line writes the request sent
// upstream). A log whose format filter deletes or replaces the header (or
// the request, or its headers) does not write it; a hash filter hides the
// upstream's credential, but not a client's key: it writes the start of the
// SHA-256 the key store keeps.
func (h *Handler) warnAboutLogs(ctx caddy.Context, srv *caddyhttp.Server, once func(*caddyhttp.Server, string) bool) {
	logCredentials := srv.Logs != nil && srv.Logs.ShouldLogCredentials
	exposed := func(header string) bool { return header != "" && (!redactedByCaddy[header] || logCredentials) }
	var clientHeaders []string
	for _, loc := range h.keyFrom {
		if exposed(loc.Header) {
			clientHeaders = append(clientHeaders, loc.Header)
		}
	}
	upstream := h.credential.Header()
	logs, readable := loadedLogs(ctx)
	h.warnAboutConfigLine(once, logs, readable)
	if len(clientHeaders) == 0 && !exposed(upstream) {
		return
	}

	var lines []loggedRequest
	if srv.Logs != nil {
		lines = append(lines, loggedRequest{subject: "access", level: zapcore.InfoLevel,
			loggers: serverLoggers("http.log.access", srv.Logs, !srv.Logs.SkipUnmappedHosts),
			what:    "this server's access log writes request headers in full"})
	}
	lines = append(lines, loggedRequest{subject: "error", level: zapcore.ErrorLevel,
		loggers: serverLoggers("http.log.error", srv.Logs, true),
		what:    "Caddy's error log writes request headers in full when a handler fails (a 5xx, such as an upstream that does not answer)"},
		loggedRequest{subject: "debug", level: zapcore.DebugLevel, loggers: []string{"http.handlers.rewrite"},
			what: "debug logging writes request headers in full (the rewrite line of handle_path, uri and rewrite)",
			fix:  ", or log at info"})
	for _, header := range clientHeaders {
		for _, line := range lines {
			h.warnIfLogged(srv, once, logs, readable, line, header, "clients send keys in "+header, false)
		}
	}
	if exposed(upstream) {
		line := loggedRequest{subject: "debug-upstream", level: zapcore.DebugLevel, loggers: []string{"http.handlers.reverse_proxy"},
			what: `debug logging writes the headers sent upstream in full (reverse_proxy's "upstream roundtrip" line)`,
			fix:  ", or log at info"}
		h.warnIfLogged(srv, once, logs, readable, line, upstream, "upstream_auth sets the upstream's credential in "+upstream, true)
	}
}

// warnIfLogged warns once (per server, or per config load for debug
// lines, which depend on the global logs only) when a log writes the
// header in a line of this kind. When the logs could not be read, only
// the access log is warned about, as if it had no filter.
func (h *Handler) warnIfLogged(srv *caddyhttp.Server, once func(*caddyhttp.Server, string) bool, logs []configuredLog, readable bool,
	line loggedRequest, header, why string, hashOK bool) {
	var writers []string
	var misspelt string
	hashed := false
	if readable {
		for _, l := range logs {
			for _, logger := range line.loggers {
				if l.writes(logger, line.level, header, hashOK) {
					writers = append(writers, l.name)
					if m := l.misspelt(header); m != "" {
						misspelt = m
					}
					hashed = hashed || l.hashes(header)
					break
				}
			}
		}
		if len(writers) == 0 {
			return
		}
		sort.Strings(writers)
	} else if line.subject != "access" {
		return
	}
	key := srv
	if strings.HasPrefix(line.subject, "debug") {
		key = nil
	}
	if !once(key, line.subject+":"+header) {
		return
	}
	where := "the log's format filter"
	if len(writers) > 0 {
		where = "the format filter of Caddy's log " + strings.Join(quoteAll(writers), ", ")
		if slices.Contains(writers, "default") {
			where += ` ("default" is the global options' log)`
		}
	}
	msg := line.what + ", and " + why + "; delete the header in " + where +
		", e.g. log { format filter { request>headers>" + header + " delete } }" + line.fix
	if misspelt != "" {
		msg += "; the filter names " + misspelt + ", which Caddy does not match: it writes header names in canonical form"
	}
	if hashed {
		msg += "; a hash filter is not enough for a key: it writes the first 8 hex digits of the key's SHA-256, the start of the digest the key store keeps"
	}
	fields := []zap.Field{zap.String("header", header)}
	if len(writers) > 0 {
		fields = append(fields, zap.Strings("logs", writers))
	}
	h.logger.Warn(msg, fields...)
}

// serverLoggers names the loggers a server's access or error lines go
// through: base, or base.<name> for each logger name the server maps
// hosts to, and for the default name (hosts without a mapping) when it is
// named, or nothing is mapped. Hosts that no site serves, which Caddy logs
// through base when others are mapped, never reach a handler and are left
// out (the error log's warning covers the default log anyway).
func serverLoggers(base string, slc *caddyhttp.ServerLogConfig, unmapped bool) []string {
	if slc == nil {
		return []string{base}
	}
	names := map[string]bool{}
	if unmapped && (slc.DefaultLoggerName != "" || len(slc.LoggerNames) == 0) {
		names[slc.DefaultLoggerName] = true
	}
	for _, ns := range slc.LoggerNames {
		for _, n := range ns {
			names[n] = true
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		if n == "" {
			out = append(out, base)
		} else {
			out = append(out, base+"."+n)
		}
	}
	return out
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = `"` + n + `"`
	}
	return out
}

// configLogger logs the whole HTTP app's config at debug on every load
// (automatic HTTPS's "adjusted config" line), the handlers' own JSON in it.
const configLogger = "http.auto_https"

// warnAboutConfigLine warns, once per config load, when a log at debug
// takes Caddy's "adjusted config" line and this handler's config holds a
// secret as it is: the line writes it. A secret from a file or an {env.*}
// placeholder stays out (the line shows the path or the placeholder).
func (h *Handler) warnAboutConfigLine(once func(*caddyhttp.Server, string) bool, logs []configuredLog, readable bool) {
	if len(h.inlineSecrets) == 0 || !readable {
		return
	}
	var writers []string
	for _, l := range logs {
		if zapcore.DebugLevel >= l.level && loggerAllowed(l.include, l.exclude, configLogger) && !l.hidden["http"] {
			writers = append(writers, l.name)
		}
	}
	if len(writers) == 0 || !once(nil, "config:"+strings.Join(h.inlineSecrets, ",")) {
		return
	}
	sort.Strings(writers)
	h.logger.Warn("debug logging writes the whole config (the \"adjusted config\" line of "+configLogger+
		"), and this handler's config holds "+strings.Join(h.inlineSecrets, " and ")+
		" as it is; take it from a file or an {env.*} placeholder (upstream_auth file <path>, password_file <path>), or log at info",
		zap.Strings("logs", writers), zap.Strings("secrets", h.inlineSecrets))
}

// inlineSecrets names the secrets of a handler's config written as they
// are: upstream_auth's value, and any "password" of its key source or
// counter store (their Redis settings), unless a placeholder fills it.
func inlineSecrets(auth *headers.Credential, raws ...json.RawMessage) []string {
	var names []string
	if auth != nil && auth.Value != "" && !strings.Contains(auth.Value, "{") {
		names = append(names, "upstream_auth's credential")
	}
	for _, raw := range raws {
		if len(raw) == 0 || !bytes.Contains(raw, []byte(`"password"`)) {
			continue
		}
		var v any
		if json.Unmarshal(raw, &v) == nil && holdsPassword(v) {
			names = append(names, "a Redis password")
			break
		}
	}
	return names
}

// holdsPassword reports whether a decoded JSON value has a non-empty
// "password" without a placeholder, at any depth.
func holdsPassword(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "password" && s != "" && !strings.Contains(s, "{") {
				return true
			}
			if holdsPassword(x) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if holdsPassword(x) {
				return true
			}
		}
	}
	return false
}
