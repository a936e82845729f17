package headers

import (
	"net/http"
	"testing"
)

const testKey = "DEV_API_2bGqJYr9AIPFyyHx5oAT2zwAlD2blf3D0una" // from testdata/keyformat.json

func canonical(t *testing.T, locs ...KeyLocation) []KeyLocation {
	t.Helper()
	out := make([]KeyLocation, len(locs))
	for i, l := range locs {
		var err error
		if out[i], err = l.Canonical(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestTakeKeyDefaults(t *testing.T) {
	locs := canonical(t, DefaultKeyLocations...)
	for name, c := range map[string]struct {
		header http.Header
		found  bool
		left   []string // headers that must remain
		gone   []string // headers that must be removed
	}{
		"bearer":                      {http.Header{"Authorization": {"Bearer " + testKey}}, true, nil, []string{"Authorization"}},
		"bearer lowercase":            {http.Header{"Authorization": {"bearer " + testKey}}, true, nil, []string{"Authorization"}},
		"x-api-key":                   {http.Header{"X-Api-Key": {testKey}}, true, nil, []string{"X-Api-Key"}},
		"basic then header":           {http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}, "X-Api-Key": {testKey}}, true, nil, []string{"Authorization", "X-Api-Key"}},
		"second key in other header":  {http.Header{"Authorization": {"Bearer " + testKey}, "X-Api-Key": {"DEV_API_other"}}, true, nil, []string{"Authorization", "X-Api-Key"}},
		"both carry a key":            {http.Header{"Authorization": {"Bearer " + testKey}, "X-Api-Key": {testKey}}, true, nil, []string{"Authorization", "X-Api-Key"}},
		"bare key in Authorization":   {http.Header{"X-Api-Key": {testKey}, "Authorization": {testKey}}, true, nil, []string{"X-Api-Key", "Authorization"}},
		"key in later value":          {http.Header{"Authorization": {"Bearer " + testKey}, "X-Api-Key": {"junk", testKey}}, true, nil, []string{"Authorization", "X-Api-Key"}},
		"other scheme in earlier loc": {http.Header{"X-Api-Key": {testKey}, "Authorization": {"Token " + testKey}}, true, nil, []string{"X-Api-Key", "Authorization"}},
		"bearer no token":             {http.Header{"Authorization": {"Bearer "}}, false, nil, []string{"Authorization"}},
		"scheme glued":                {http.Header{"Authorization": {"Bearer" + testKey}}, false, nil, []string{"Authorization"}},
		"nothing":                     {http.Header{"Accept": {"*/*"}}, false, []string{"Accept"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			key, found := TakeKey(c.header, locs)
			if found != c.found {
				t.Fatalf("found = %v, want %v", found, c.found)
			}
			if found && key != testKey {
				t.Errorf("read the wrong value (length %d)", len(key))
			}
			for _, h := range c.left {
				if c.header.Get(h) == "" {
					t.Errorf("%s was removed", h)
				}
			}
			for _, h := range c.gone {
				if _, ok := c.header[http.CanonicalHeaderKey(h)]; ok {
					t.Errorf("%s was kept", h)
				}
			}
		})
	}
}

func TestTakeKeyCustomLocationsInOrder(t *testing.T) {
	locs := canonical(t, KeyLocation{Header: "x-gateway-key"}, KeyLocation{Header: "Authorization", Scheme: "Token"})
	h := http.Header{"Authorization": {"Token other"}, "X-Gateway-Key": {" " + testKey + " "}}
	key, found := TakeKey(h, locs)
	if !found || key != testKey {
		t.Fatalf("found=%v", found)
	}
	if _, kept := h["Authorization"]; kept {
		t.Error("a configured key header was kept: whatever it holds, it must not reach the upstream")
	}
	h = http.Header{"Authorization": {"Token " + testKey}}
	if key, found := TakeKey(h, locs); !found || key != testKey || len(h) != 0 {
		t.Error("the second location was not used")
	}
}

func TestCanonicalRejectsBadNames(t *testing.T) {
	for _, l := range []KeyLocation{{Header: ""}, {Header: "X Key"}, {Header: "X:Key"}, {Header: "Authorization", Scheme: "Bearer token"}} {
		if _, err := l.Canonical(); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}
