package gatewaytest

import (
	"strconv"
	"strings"
	"testing"
)

// MetricValue reads one sample of name, with labels among its labels,
// from a Prometheus text exposition.
func MetricValue(t testing.TB, exposition, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		return v, err == nil
	}
	return 0, false
}
