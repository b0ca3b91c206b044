package proto

// The HTTP/2 flow-control windows of a worker's connection, per stream and
// for the whole connection: the master's server and the worker's client
// set both, fixed. With gRPC's default dynamic windows, each side estimates
// the bandwidth-delay product by sending a PING with the first data frame
// after each PING's answer; messages as small and spaced as assignments and
// results make that a PING and its answer per message, two more frames to
// write and read on each side. These hold the largest live output batch
// (48 KiB) many times over, and a large result crosses a LAN in a few round
// trips.
const (
	StreamWindow = 1 << 20
	ConnWindow   = 4 << 20
)
