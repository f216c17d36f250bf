package exit

// HostLocal exposes hostLocal to the external tests.
var HostLocal = hostLocal
