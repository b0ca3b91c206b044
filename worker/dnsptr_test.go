package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS answers PTR questions from a table, on a UDP port on loopback.
func fakeDNS(t *testing.T, ptr map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() { // ends when pc is closed
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q dnsmessage.Message
			if q.Unpack(buf[:n]) != nil || len(q.Questions) != 1 {
				continue
			}
			resp := dnsmessage.Message{Header: dnsmessage.Header{ID: q.ID, Response: true}, Questions: q.Questions}
			if target, ok := ptr[q.Questions[0].Name.String()]; ok {
				resp.Answers = []dnsmessage.Resource{{
					Header: dnsmessage.ResourceHeader{Name: q.Questions[0].Name, Type: dnsmessage.TypePTR, Class: dnsmessage.ClassINET, TTL: 600},
					Body:   &dnsmessage.PTRResource{PTR: dnsmessage.MustNewName(target)},
				}}
			} else {
				resp.RCode = dnsmessage.RCodeNameError
			}
			out, _ := resp.Pack()
			pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().String()
}

func TestDNSPTRAsksTheServerNotHostsFile(t *testing.T) {
	server := fakeDNS(t, map[string]string{
		"3.0.23.172.in-addr.arpa.": "roundhouse_worker_3.roundhouse_default.",
	})
	d := dnsPTR{servers: []string{server}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	names, err := d.LookupAddr(ctx, "172.23.0.3")
	if err != nil || !slices.Equal(names, []string{"roundhouse_worker_3.roundhouse_default."}) {
		t.Fatalf("LookupAddr = %v, %v", names, err)
	}
	if _, err := d.LookupAddr(ctx, "172.23.0.9"); err == nil {
		t.Fatal("unknown address: want an error")
	}
	// And end to end through deriveWorkerID, the compose v1 name.
	id, _, err := deriveWorkerID(ctx, d, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("172.23.0.3")}, func() (string, error) { return "d8922d455d17", nil })
	if err != nil || id != "roundhouse_worker_3" {
		t.Fatalf("deriveWorkerID = %q, %v; want roundhouse_worker_3", id, err)
	}
}

func TestReverseName(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"10.1.2.3", "3.2.1.10.in-addr.arpa."},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."},
	}
	for _, tt := range tests {
		if got, err := reverseName(tt.addr); err != nil || got != tt.want {
			t.Errorf("reverseName(%s) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

func TestSystemDNSReadsResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# docker\nnameserver 127.0.0.11\noptions ndots:0\nnameserver ::1\n"), 0o644)
	d, err := systemDNS(p)
	if err != nil || !slices.Equal(d.servers, []string{"127.0.0.11:53", "[::1]:53"}) {
		t.Fatalf("servers = %v, %v", d.servers, err)
	}
}
