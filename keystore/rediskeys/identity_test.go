package rediskeys

import (
	"context"
	"fmt"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/internal/redisconn"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestStoresAreKnownByTheirDatabase: the admin API and the portal match
// stores by keystore.IdentityOf. Two Redis clusters whose long address
// lists differ only at the end have one description (Describe shortens
// it) and are two stores; one database reached as two users is one store.
func TestStoresAreKnownByTheirDatabase(t *testing.T) {
	addrs := func(last int) []string {
		a := make([]string, 40)
		for i := range a {
			a[i] = fmt.Sprintf("127.0.0.1:%d", 20000+i)
		}
		a[len(a)-1] = fmt.Sprintf("127.0.0.1:%d", last)
		return a
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	provisioned := func(c redisconn.Config) keystore.Store {
		s := &Source{Config: c}
		if err := s.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Cleanup() })
		return s.Store()
	}
	a := provisioned(redisconn.Config{Addresses: addrs(30001)})
	b := provisioned(redisconn.Config{Addresses: addrs(30002)})
	asOther := provisioned(redisconn.Config{Addresses: addrs(30001), Username: "other"})
	if a.Describe() != b.Describe() {
		t.Fatalf("the two clusters are described apart (%q, %q); the test needs a description that hides their difference", a.Describe(), b.Describe())
	}
	if keystore.IdentityOf(a) == keystore.IdentityOf(b) {
		t.Errorf("two clusters with one description are one store")
	}
	if keystore.IdentityOf(a) != keystore.IdentityOf(asOther) {
		t.Errorf("one database reached as two users is two stores")
	}
}
