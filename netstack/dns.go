package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsTimeout bounds one query to one server; a variable for the tests.
var dnsTimeout = 5 * time.Second

var (
	// errNXDomain is a server's word that a name does not exist.
	errNXDomain   = errors.New("no such host")
	errDNSTimeout = errors.New("DNS server did not answer")
)

// LookupNetIP returns the addresses of host (an IP literal or a name) that
// the tunnel can reach: network is ip, ip4 or ip6, and a name resolves only
// to families the stack has an address of, IPv6 first.
//
// Names are resolved through the tunnel by Config.DNS alone, as wg-quick's
// DNS setting intends: they are taken as fully qualified, and nothing of the
// host's resolver configuration (/etc/hosts, search domains, its servers)
// takes part. The servers are asked in turn until one answers.
func (s *Stack) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	want4, want6 := network != "ip6", network != "ip4"
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return nil, &net.AddrError{Err: "zoned addresses are not routable through the tunnel", Addr: host}
		}
		ip = ip.Unmap()
		if ip.Is4() && !want4 || ip.Is6() && !want6 {
			return nil, &net.AddrError{Err: "no suitable address", Addr: host}
		}
		return []netip.Addr{ip}, nil
	}
	if len(s.dns) == 0 {
		return nil, &net.DNSError{Err: "no DNS server in the tunnel configuration", Name: host, IsNotFound: true}
	}
	fqdn := host
	if !strings.HasSuffix(fqdn, ".") {
		fqdn += "."
	}
	if !isDomainName(fqdn) {
		return nil, &net.DNSError{Err: errNXDomain.Error(), Name: host, IsNotFound: true}
	}
	name := dnsmessage.MustNewName(fqdn)
	var types []dnsmessage.Type
	if want6 && s.hasV6 {
		types = append(types, dnsmessage.TypeAAAA)
	}
	if want4 && s.hasV4 {
		types = append(types, dnsmessage.TypeA)
	}
	if len(types) == 0 {
		return nil, &net.AddrError{Err: "no address of that family on the tunnel", Addr: host}
	}

	ips := make([][]netip.Addr, len(types))
	errs := make([]error, len(types))
	var wg sync.WaitGroup
	for i, qtype := range types {
		wg.Go(func() { ips[i], errs[i] = s.query(ctx, name, qtype) })
	}
	wg.Wait()
	var all []netip.Addr
	for _, a := range ips {
		all = append(all, a...)
	}
	if len(all) > 0 {
		return all, nil
	}
	notFound := &net.DNSError{Err: errNXDomain.Error(), Name: host, IsNotFound: true}
	for _, err := range errs {
		if errors.Is(err, errNXDomain) {
			return nil, notFound
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, &net.DNSError{Err: err.Error(), Name: host, IsTimeout: errors.Is(err, errDNSTimeout)}
		}
	}
	return nil, notFound // the name exists, but has no address
}

// query asks the servers in turn for name's records of type qtype, until
// one answers.
func (s *Stack) query(ctx context.Context, name dnsmessage.Name, qtype dnsmessage.Type) ([]netip.Addr, error) {
	var err error
	for _, server := range s.dns {
		var ips []netip.Addr
		ips, err = s.exchange(ctx, server, name, qtype)
		if err == nil || errors.Is(err, errNXDomain) || ctx.Err() != nil {
			return ips, err
		}
	}
	return nil, err
}

// exchange asks server over UDP, and again over TCP if the answer was
// truncated.
func (s *Stack) exchange(ctx context.Context, server netip.Addr, name dnsmessage.Name, qtype dnsmessage.Type) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	q := dnsmessage.Question{Name: name, Type: qtype, Class: dnsmessage.ClassINET}
	id := uint16(rand.Uint32())
	req, err := (&dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true}, Questions: []dnsmessage.Question{q}}).Pack()
	if err != nil {
		return nil, err
	}
	resp, err := s.roundTrip(ctx, "udp", server, req, id)
	if err == nil && resp.Truncated {
		resp, err = s.roundTrip(ctx, "tcp", server, req, id)
	}
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return nil, errDNSTimeout
		}
		return nil, err
	case len(resp.Questions) != 1 || resp.Questions[0] != q:
		return nil, errors.New("DNS answer to another question")
	case resp.RCode == dnsmessage.RCodeNameError:
		return nil, errNXDomain
	case resp.RCode != dnsmessage.RCodeSuccess:
		return nil, fmt.Errorf("DNS server failure (%v)", resp.RCode)
	}
	var ips []netip.Addr
	for _, rr := range resp.Answers {
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			if qtype == dnsmessage.TypeA {
				ips = append(ips, netip.AddrFrom4(b.A))
			}
		case *dnsmessage.AAAAResource:
			if qtype == dnsmessage.TypeAAAA {
				ips = append(ips, netip.AddrFrom16(b.AAAA).Unmap())
			}
		}
	}
	return ips, nil
}

// roundTrip sends req to server and returns the response with ID id.
func (s *Stack) roundTrip(ctx context.Context, proto string, server netip.Addr, req []byte, id uint16) (*dnsmessage.Message, error) {
	c, err := s.dial(ctx, proto, netip.AddrPortFrom(server, 53))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var m dnsmessage.Message
	if proto == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(req))), req...)); err != nil {
			return nil, err
		}
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return nil, err
		}
		b := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		if err := m.Unpack(b); err != nil {
			return nil, err
		}
		if m.ID != id || !m.Response {
			return nil, errors.New("DNS answer does not match the query")
		}
		return &m, nil
	}
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	b := make([]byte, 65535)
	for {
		n, err := c.Read(b)
		if err != nil {
			return nil, err
		}
		// Ignore what is not the answer (a late answer to an earlier try).
		if m.Unpack(b[:n]) == nil && m.ID == id && m.Response {
			return &m, nil
		}
	}
}

// isDomainName reports whether name (with a trailing dot) is made of labels
// of 1 to 63 letters, digits, '-' and '_', at most 254 bytes in all.
func isDomainName(name string) bool {
	if len(name) > 254 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
