// Package localenv says which variables a master or worker run as a local
// process by the integration tools (demo, bench) must get empty.
//
// A developer's shell may hold settings meant for the compose lab (after
// `set -a; . ./.env`, or with certificates for TLS=1): an inherited
// MASTER_WORKER_TOKEN or MASTER_TLS_* would make the master refuse the local
// workers, and several workers on one host cannot share a fixed health or
// metrics address. Empty is unset for both binaries (env v10), and exec keeps
// the last of duplicate variables, so appending these entries after
// os.Environ() clears them.
package localenv

// MasterEnv returns the "VAR=" entries that clear a local master's inherited
// worker token, TLS files and pprof address. The API token is left to the
// caller, which decides whether it sends one.
func MasterEnv() []string {
	return []string{"MASTER_WORKER_TOKEN=", "MASTER_TLS_CERT=", "MASTER_TLS_KEY=", "MASTER_TLS_CLIENT_CA=",
		"MASTER_PPROF_ADDR="}
}

// WorkerEnv returns the "VAR=" entries that clear a local worker's inherited
// token, TLS files and listen addresses.
func WorkerEnv() []string {
	return []string{"WORKER_TOKEN=", "WORKER_TLS_CA=", "WORKER_TLS_CERT=", "WORKER_TLS_KEY=", "WORKER_TLS_SERVER_NAME=",
		"WORKER_HEALTH_ADDR=", "WORKER_METRICS_ADDR="}
}
