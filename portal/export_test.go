package portal

import "time"

// AdminScan is, for the browser tests, how many records one filtered admin
// page looks through at most.
const AdminScan = adminScan

// SetExpirySweepEvery makes the portals made from now on look through
// their store for keys about to expire every d; the returned function puts
// back the hour.
func SetExpirySweepEvery(d time.Duration) (restore func()) {
	old := expirySweepEvery
	expirySweepEvery = d
	return func() { expirySweepEvery = old }
}
