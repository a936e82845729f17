package redisconn

import (
	"strings"
	"testing"
)

// TestDescribeSeparatesAndBoundsAddresses: addresses are separated by
// commas, and a long list is cut with a count of them all.
func TestDescribeSeparatesAndBoundsAddresses(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Addresses: []string{"127.0.0.1:22101", "127.0.0.1:22102", "127.0.0.1:22103"}}, "redis 127.0.0.1:22101,127.0.0.1:22102,127.0.0.1:22103"},
		{Config{Addresses: []string{"a:26379", "b:26379"}, MasterName: "main"}, "redis sentinel main (a:26379,b:26379)"},
		{Config{Addresses: []string{"a:6379"}, DB: 2}, "redis a:6379 db 2"},
	} {
		if got := c.cfg.Describe(); got != c.want {
			t.Errorf("Describe() = %q, want %q", got, c.want)
		}
	}
	many := make([]string, 100)
	for i := range many {
		many[i] = "redis-node.example.internal:6379"
	}
	got := Config{Addresses: many}.Describe()
	if len(got) > 260 || !strings.HasSuffix(got, "… (100 addresses)") {
		t.Errorf("100 addresses are described in %d bytes as %q", len(got), got)
	}
}
