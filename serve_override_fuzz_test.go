package apikey

import "testing"

// FuzzOverrideSigns checks that the cheap signs of an override never miss
// one the parsers find: a form or query field read as "_method" always
// shows a form sign, a JSON "_method" key always a JSON sign, and a sign
// split across two reads of a stream is still seen.
func FuzzOverrideSigns(f *testing.F) {
	for _, s := range []string{
		"_method=DELETE", "a=1&.method=put", "%5Fmethod=x", "_m%65thod=x", "+.method=DELETE", "_method%00x=1",
		"_method[0]=DELETE", `{"_method":"DELETE"}`, `{"\u005fmethod":"x"}`, `{"_meth\u006Fd":["x"]}`,
		`{"a":{"_method":"x"},"b":"_method"}`, " _METHOD=delete",
	} {
		f.Add(s, uint16(3))
	}
	f.Fuzz(func(t *testing.T, s string, split uint16) {
		b := []byte(s)
		if len(formOverrides(s)) > 0 && !formMayOverride(b) {
			t.Errorf("a form field read as _method without a form sign: %q", s)
		}
		if methods, unknown := jsonOverrides(b); (len(methods) > 0 || unknown) && !jsonMayOverride(b) {
			t.Errorf("a JSON _method without a JSON sign: %q", s)
		}
		for _, kinds := range []bodyKind{kindForm, kindMultipart, kindJSON} {
			if !overrideNeedle(kinds, b) {
				continue
			}
			cut := int(split) % (len(b) + 1)
			var seam overrideSeam
			seam.kinds = kinds
			if !seam.found(b[:cut]) && !seam.found(b[cut:]) {
				t.Errorf("kinds %d: a sign in %q is missed when read in two parts at %d", kinds, s, cut)
			}
		}
	})
}
