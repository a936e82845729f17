package apikey

import (
	"slices"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
	if len(clientHeaders) == 0 && !exposed(upstream) {
		return
	}
	logs, readable := loadedLogs(ctx)

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
		line := loggedRequest{subject: "debug", level: zapcore.DebugLevel, loggers: []string{"http.handlers.reverse_proxy"},
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
	if line.subject == "debug" {
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
