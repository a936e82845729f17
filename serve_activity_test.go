package apikey

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// writerType is a handler that answers with the type of the
// ResponseWriter it was given: what an upstream after apikey gets.
type writerType struct{}

func init() {
	caddy.RegisterModule(writerType{})
	httpcaddyfile.RegisterHandlerDirective("apikey_test_writer_type", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return writerType{}, nil
	})
}

func (writerType) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.apikey_test_writer_type", New: func() caddy.Module { return new(writerType) }}
}

func (writerType) ServeHTTP(w http.ResponseWriter, _ *http.Request, _ caddyhttp.Handler) error {
	_, err := fmt.Fprintf(w, "%T", w)
	return err
}

// TestAdmittedRequestsAreUnwrappedWithoutAPortal: the status of an
// admitted request is noted (its ResponseWriter wrapped) only for a
// portal's activity pages: with no portal of the route's store, the
// handler after apikey gets the writer apikey was given; with one, the
// status is noted.
func TestAdmittedRequestsAreUnwrappedWithoutAPortal(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_writer", Role: "reader"})
	keys := gatewaytest.WriteKeyFile(t, key.Record)
	for _, withPortal := range []bool{false, true} {
		port := gatewaytest.Port(t)
		portal := ""
		if withPortal {
			portal = fmt.Sprintf("\thandle /portal/* {\n\t\tapikey_portal {\n\t\t\tkeys file %s\n\t\t\tservice echo /echo\n\t\t}\n\t}\n", keys)
		}
		gatewaytest.Start(t, fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\nhttp://127.0.0.1:%d {\n%s"+
			"\troute /echo* {\n\t\tapikey {\n\t\t\tkeys file %s\n\t\t\tfailed_auth_limit off\n\t\t}\n\t\tapikey_test_writer_type\n\t}\n}\n",
			port, portal, keys))
		r := gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/echo", port), key.Bearer()...)
		wrapped := strings.Contains(r.Body, "statusWriter")
		if r.Status != 200 || wrapped != withPortal {
			t.Errorf("with a portal: %v; key %s's request: %d, the next handler got a %s; want it wrapped (statusWriter) only with a portal",
				withPortal, key.Record.ID, r.Status, r.Body)
		}
	}
}
