package app

import (
	"path/filepath"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/audit"
)

// Defaults of the audit log's roll by size.
const (
	DefaultAuditRollSize = 100 << 20
	DefaultAuditRollKeep = 10
)

type pooledAudit struct{ *audit.Writer }

func (p pooledAudit) Destruct() error {
	p.Close()
	return nil
}

// OpenAudit returns the process's writer of the audit log at path, shared
// by every route and portal that names it, across reloads, and the
// function that lets go of it.
func OpenAudit(path string) (*audit.Writer, func() error, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	p, release, err := load(auditPool, abs, func() (pooledAudit, error) {
		w := audit.NewWriter(abs, func() *zap.Logger { return caddy.Log().Named("http.handlers.apikey.audit") })
		w.SetRoll(audit.Roll{Size: DefaultAuditRollSize, Keep: DefaultAuditRollKeep})
		return pooledAudit{w}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return p.Writer, release, nil
}
