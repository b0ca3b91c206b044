package grpcapi

import (
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/readme"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// TestREADMEMethods: every method of NodeService is a row of the README's
// gRPC table that says what it does, and the table has no other.
func TestREADMEMethods(t *testing.T) {
	rows := readme.Rows(readme.SectionOf(t, "## gRPC"))
	methods := map[string]bool{}
	for _, m := range pb.NodeService_ServiceDesc.Methods {
		methods[m.MethodName] = true
	}
	for _, s := range pb.NodeService_ServiceDesc.Streams {
		methods[s.StreamName] = true
	}
	for m := range methods {
		var n int
		for _, r := range rows {
			if len(r.Names) > 0 && strings.HasPrefix(r.Names[0], m+"(") {
				n++
				if len(r.Cells) < 2 || len(r.Cells[1]) < 20 {
					t.Errorf("README's gRPC row of %s does not say what it does: %s", m, r.Line)
				}
			}
		}
		if n != 1 {
			t.Errorf("README's gRPC table has %d rows for NodeService.%s, want 1", n, m)
		}
	}
	for _, r := range rows {
		name, _, _ := strings.Cut(r.Names[0], "(")
		if !methods[name] {
			t.Errorf("README's gRPC table documents %s, which NodeService does not have: %s", name, r.Line)
		}
	}
}
