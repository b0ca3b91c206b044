package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsPTR looks up PTR records by asking DNS servers directly. net.Resolver
// answers from /etc/hosts first, and in a container Docker puts the random
// hostname there: the very name a derived worker ID is meant to avoid.
type dnsPTR struct {
	servers []string // host:port
}

// systemDNS returns a dnsPTR for the servers in /etc/resolv.conf.
func systemDNS(path string) (dnsPTR, error) {
	f, err := os.Open(path)
	if err != nil {
		return dnsPTR{}, err
	}
	defer f.Close()
	var d dnsPTR
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "nameserver" {
			d.servers = append(d.servers, net.JoinHostPort(fields[1], "53"))
		}
	}
	return d, sc.Err()
}

// LookupAddr returns the names the first answering server gives for addr.
func (d dnsPTR) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	name, err := reverseName(addr)
	if err != nil {
		return nil, err
	}
	errs := []error{errors.New("no DNS server in resolv.conf")}
	for _, s := range d.servers {
		names, err := queryPTR(ctx, s, name)
		if err == nil {
			return names, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// reverseName is addr's name in in-addr.arpa or ip6.arpa.
func reverseName(addr string) (string, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return "", fmt.Errorf("%q is not an IP address", addr)
	}
	var b strings.Builder
	if v4 := ip.To4(); v4 != nil {
		fmt.Fprintf(&b, "%d.%d.%d.%d.in-addr.arpa.", v4[3], v4[2], v4[1], v4[0])
		return b.String(), nil
	}
	for i := len(ip) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "%x.%x.", ip[i]&0xf, ip[i]>>4)
	}
	b.WriteString("ip6.arpa.")
	return b.String(), nil
}

func queryPTR(ctx context.Context, server, name string) ([]string, error) {
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	id := uint16(rand.N(1 << 16))
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qname, Type: dnsmessage.TypePTR, Class: dnsmessage.ClassINET}},
	}
	packed, err := q.Pack()
	if err != nil {
		return nil, err
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "udp", server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write(packed); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		var resp dnsmessage.Message
		if err := resp.Unpack(buf[:n]); err != nil || resp.ID != id || !resp.Response {
			continue // not the answer to our question
		}
		if resp.RCode != dnsmessage.RCodeSuccess {
			return nil, fmt.Errorf("PTR %s: %s", name, resp.RCode)
		}
		var names []string
		for _, a := range resp.Answers {
			if ptr, ok := a.Body.(*dnsmessage.PTRResource); ok {
				names = append(names, ptr.PTR.String())
			}
		}
		return names, nil
	}
}
