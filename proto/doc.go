// Package proto holds the NodeService contract between the Roundhouse master
// and its workers: roundhouse.proto and, in roundhousepb, the Go code
// generated from it by `make proto`. Master and worker import only this.
package proto
