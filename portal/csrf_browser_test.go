package portal_test

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestPortalFormTokenFromAnotherPortIsNotAdopted: a page on another port
// of the portal's host can set cookies the portal's pages receive (cookies
// do not tell ports apart). A form token planted that way, whether made up
// or another developer's real one, is not adopted: the portal gives the
// visitor a token of their own, and a change posted with the planted one
// is refused.
func TestPortalFormTokenFromAnotherPortIsNotAdopted(t *testing.T) {
	p, _ := startPortalDemo(t, false)
	alice, bob := p.signIn(t, "alice"), p.signIn(t, "bob")

	// Another site on the same host, another port: it sets the cookie it
	// is asked to.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "apikey_portal_csrf", Value: r.URL.Query().Get("v"), Path: "/portal"})
		fmt.Fprint(w, "<!doctype html><title>elsewhere</title><p>another site")
	})}
	go other.Serve(ln)
	t.Cleanup(func() { other.Close() })
	otherBase := fmt.Sprintf("http://localhost:%d", ln.Addr().(*net.TCPAddr).Port)

	p.open(t, bob, "/portal/keys/new")
	bobsToken := tabEval[string](t, bob, `document.querySelector('input[name=csrf]').value`)
	for _, planted := range []struct{ what, token string }{
		{"a made-up token", "plantedplantedplantedplantedplantedplanted1"},
		{"bob's token", bobsToken},
	} {
		p.open(t, alice, "/portal/keys/new")
		tabDo(t, alice, "opening the page on another port", chromedp.Navigate(otherBase+"/plant?v="+url.QueryEscape(planted.token)))
		p.open(t, alice, "/portal/keys/new")
		if got := tabEval[string](t, alice, `document.querySelector('input[name=csrf]').value`); got == planted.token {
			t.Errorf("%s, set by a page on another port, is the token of alice's forms", planted.what)
		}
		// A form sent with the planted token (which its planter knows) is
		// refused.
		tabDo(t, alice, "filling the form with the planted token",
			chromedp.SetValue(chromedp.CSS(`input[name=csrf]`), planted.token),
			chromedp.SendKeys(chromedp.ID("name"), "planted"),
			chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)))
		p.submit(t, alice, `form[action="/portal/keys"] button[type=submit]`)
		if secret := tabEval[string](t, alice, `document.getElementById('secret')?.value ?? ''`); secret != "" {
			t.Errorf("a key was created from a form carrying %s planted by another port", planted.what)
		} else if text := tabEval[string](t, alice, `document.querySelector('main').innerText`); !strings.Contains(text, "Forbidden") || !strings.Contains(text, "token") {
			t.Errorf("a form carrying %s planted by another port was not refused for its token: %.200q", planted.what, text)
		}
	}
}
