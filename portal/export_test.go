package portal

// AdminScan is, for the browser tests, how many records one filtered admin
// page looks through at most.
const AdminScan = adminScan
