// Package telemetry is what an operator sees of Signet: the Prometheus
// registry with every metric the server records (namespace signet_, bounded
// labels), the decorator that measures every backend call, and the
// collector that reads each key ring's state at scrape time. The packages
// below the server (lifecycle, jose, authz, backends) never import it: the
// server records what they report through hooks and errors.
package telemetry
