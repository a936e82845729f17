package portal

import (
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

func testPolicy(t *testing.T, p Policy) Policy {
	t.Helper()
	if len(p.Services) == 0 {
		p.Services = []Service{{Name: "echo", Path: "/echo/hello"}, {Name: "ollama", Path: "/ollama/api/tags"}}
	}
	if err := p.check(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckFormWithinPolicy(t *testing.T) {
	p := testPolicy(t, Policy{MaxRole: keystore.Writer, CustomPermissions: true})
	g, err := p.checkForm(keyForm{Name: " ci ", Type: "dev", Role: "custom", Services: []string{"ollama", "echo", "ollama"},
		Permissions: "get /ollama/api/*\nPOST /ollama/api/chat\n", AllowedIPs: "10.1.2.3/8, 2001:db8::1\n192.0.2.7", Days: "30"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if g.name != "ci" || g.typ != keystore.Dev || g.role != keystore.Custom || g.days != 30 ||
		strings.Join(g.services, ",") != "echo,ollama" ||
		strings.Join(g.permissions, ",") != "GET /ollama/api/*,POST /ollama/api/chat" ||
		strings.Join(g.allowedIPs, ",") != "10.0.0.0/8,2001:db8::1,192.0.2.7" {
		t.Fatalf("got %+v", g)
	}
	if g, err := p.checkForm(keyForm{Type: "prod", Role: "reader", Services: []string{"echo"}}, true); err != nil || g.days != 90 {
		t.Fatalf("a form without expiry: %+v %v, want the policy's 90 days", g, err)
	}
}

func TestCheckFormRefusals(t *testing.T) {
	p := testPolicy(t, Policy{MaxRole: keystore.Writer, CustomPermissions: true, Types: []keystore.Type{keystore.Dev}})
	ok := keyForm{Type: "dev", Role: "reader", Services: []string{"echo"}}
	for _, c := range []struct {
		name  string
		edit  func(*keyForm)
		field string
	}{
		{"role above max", func(f *keyForm) { f.Role = "admin" }, "role"},
		{"unknown role", func(f *keyForm) { f.Role = "root" }, "role"},
		{"type not allowed", func(f *keyForm) { f.Type = "prod" }, "type"},
		{"no services", func(f *keyForm) { f.Services = nil }, "services"},
		{"all services", func(f *keyForm) { f.Services = []string{"*"} }, "services"},
		{"DELETE beyond writer", func(f *keyForm) { f.Permissions = "DELETE /echo/x" }, "permissions"},
		{"any method beyond writer", func(f *keyForm) { f.Permissions = "* /echo/x" }, "permissions"},
		{"permission without path", func(f *keyForm) { f.Permissions = "GET" }, "permissions"},
		{"custom without permissions", func(f *keyForm) { f.Role = "custom" }, "permissions"},
		{"a host name as IP", func(f *keyForm) { f.AllowedIPs = "example.com" }, "allowed_ips"},
		{"an IP with a zone", func(f *keyForm) { f.AllowedIPs = "fe80::1%eth0" }, "allowed_ips"},
		{"zero days", func(f *keyForm) { f.Days = "0" }, "expiry"},
		{"too many days", func(f *keyForm) { f.Days = "91" }, "expiry"},
		{"a long name", func(f *keyForm) { f.Name = strings.Repeat("n", 201) }, "name"},
		{"too many permissions", func(f *keyForm) { f.Permissions = strings.Repeat("GET /x\n", maxPermissions+1) }, "permissions"},
	} {
		f := ok
		c.edit(&f)
		_, err := p.checkForm(f, true)
		var fe *formError
		if err == nil || !asFormError(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: got %v, want a refusal naming %s", c.name, err, c.field)
		}
	}
	strict := testPolicy(t, Policy{})
	if _, err := strict.checkForm(keyForm{Type: "dev", Role: "reader", Services: []string{"echo"}, Permissions: "GET /echo/*"}, true); err == nil {
		t.Error("permissions were accepted without custom_permissions")
	}
	if roles := strings.Join(strict.roles(), ","); roles != "reader,writer" {
		t.Errorf("the default policy offers roles %s, want reader,writer", roles)
	}
}

func asFormError(err error, fe **formError) bool {
	e, ok := err.(*formError)
	*fe = e
	return ok
}

func TestPolicyCheck(t *testing.T) {
	for _, c := range []struct {
		p    Policy
		want string
	}{
		{Policy{}, "at least one service"},
		{Policy{Services: []Service{{Name: "a b"}}}, "one word"},
		{Policy{Services: []Service{{Name: "a"}, {Name: "a"}}}, "twice"},
		{Policy{Services: []Service{{Name: "a", Path: "x"}}}, "must start with /"},
		{Policy{Services: []Service{{Name: "a"}}, MaxRole: keystore.Custom}, "max_role"},
		{Policy{Services: []Service{{Name: "a"}}, Expiry: 1}, "at least a day"},
	} {
		if err := c.p.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.p, err, c.want)
		}
	}
}
